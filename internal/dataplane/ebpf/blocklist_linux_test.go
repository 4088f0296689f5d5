package ebpf

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

// TestBlocklistPrograms runs packets through the loaded programs (BPF_PROG_TEST_RUN) with
// blocklists set through SetBlocked: XDP and every TC program drop packets from or to a listed
// prefix, of any protocol, before policy (no endpoint, no policy at all here, so policy would
// pass them); each entry counts its drops; a sample is written as blocked flow events; and
// replacing the set lifts what left it while the entries that stay keep their counts.
func TestBlocklistPrograms(t *testing.T) {
	netnstest.RequireRoot(t)
	o, d := loadedDataplane(t)
	listedNet, listedHost := netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")
	// An IPv6 entry is ignored; a 4-in-6 one is taken as IPv4.
	if err := d.SetBlocked([]netip.Prefix{listedNet, netip.MustParsePrefix("::ffff:192.0.2.7/128"), netip.MustParsePrefix("2001:db8::/32")}); err != nil {
		t.Fatal(err)
	}
	const xdpDrop, xdpPass = 1, 2
	xdp := func(pkt []byte) uint32 {
		t.Helper()
		ret, err := o.objs.XdpUplink.Run(&ebpf.RunOptions{Data: pkt})
		if err != nil {
			t.Fatalf("XDP test run: %v", err)
		}
		return ret
	}
	out, in := netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.1.2.3")
	host := netip.MustParseAddr("192.0.2.7")
	icmp := packet(in, out, ir.Protocol(1), 0, 0)
	cases := []struct {
		name    string
		pkt     []byte
		blocked bool
	}{
		{"listed source", packet(in, out, ir.TCP, 1234, 80), true},
		{"listed destination", packet(out, host, ir.UDP, 53, 53), true},
		{"listed source, ICMP", icmp, true},
		{"listed destination, SCTP", packet(out, in, ir.SCTP, 1, 2), true},
		{"neither listed", packet(out, netip.MustParseAddr("192.0.2.8"), ir.TCP, 1234, 80), false},
	}
	for _, tc := range cases {
		if got := xdp(tc.pkt) == xdpDrop; got != tc.blocked {
			t.Errorf("%s: XDP dropped %v", tc.name, got)
		}
		for _, prog := range []*ebpf.Program{o.objs.FromPod, o.objs.ToPod, o.objs.FromUplink} {
			if got := !run(t, prog, tc.pkt); got != tc.blocked {
				t.Errorf("%s: %s dropped %v", tc.name, prog, got)
			}
		}
	}
	counts, err := d.BlockCounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 2 || counts[0].Prefix != listedNet || counts[1].Prefix != listedHost {
		t.Fatalf("blocklist entries %+v", counts)
	}
	// 10/8: three packets (TCP, ICMP, SCTP) through XDP and three TC programs; 192.0.2.7: one.
	if counts[0].Packets != 12 || counts[1].Packets != 4 || counts[1].Bytes != 4*54 {
		t.Errorf("per-entry counts %+v", counts)
	}
	c, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c["xdp_drop_blocked"] != 4 || c["drop_blocked"] != 12 {
		t.Errorf("counters: xdp_drop_blocked %d, drop_blocked %d", c["xdp_drop_blocked"], c["drop_blocked"])
	}

	// The sampled events: blocked, not allowed, with the packet's addresses and ports.
	evs := ringEvents(t, o)
	for _, ev := range evs {
		if policyDropKind(ev.Blocked) != policyDropKindDROP_BLOCKLIST || ev.Allowed != 0 {
			t.Errorf("event %+v: want blocked, not allowed", ev)
		}
	}
	if len(evs) != 16 {
		t.Errorf("%d blocked events, want 16 (all under the sample limit)", len(evs))
	} else if ev := evs[0]; addrOf(ev.Saddr) != in || addrOf(ev.Daddr) != out || portOf(ev.Dport) != 80 || ev.Protocol != 6 {
		t.Errorf("first event %+v: want %s -> %s:80 TCP", ev, in, out)
	}

	// Replace: 10/8 lifted, 192.0.2.7 kept with its counts.
	if err := d.SetBlocked([]netip.Prefix{listedHost}); err != nil {
		t.Fatal(err)
	}
	if xdp(cases[0].pkt) != xdpPass || !run(t, o.objs.ToPod, cases[0].pkt) {
		t.Error("a lifted prefix is still dropped")
	}
	if xdp(cases[1].pkt) != xdpDrop {
		t.Error("a kept prefix is no longer dropped")
	}
	if counts, _ := d.BlockCounts(); len(counts) != 1 || counts[0].Packets != 5 {
		t.Errorf("after replacing: %+v", counts)
	}
	// A new process adopting the map reads what it holds before writing.
	d2 := &Dataplane{objs: o}
	if err := d2.SetBlocked(nil); err != nil {
		t.Fatal(err)
	}
	if counts, _ := d2.BlockCounts(); len(counts) != 0 {
		t.Errorf("after clearing: %+v", counts)
	}
}

// TestSynLimitPrograms checks the SYN token buckets: toward a limited pod each source passes
// its burst of new connection attempts and then is dropped (counted, sampled as a Limited
// event), another source has a bucket of its own, packets other than a bare SYN and traffic to
// other pods are untouched, and clearing the limits lets everything pass again.
func TestSynLimitPrograms(t *testing.T) {
	netnstest.RequireRoot(t)
	o, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d := &Dataplane{objs: o, gens: map[uint32]generation{}}
	target, other := netip.MustParseAddr("10.244.1.11"), netip.MustParseAddr("10.244.1.12")
	for i, a := range []netip.Addr{target, other} {
		putEndpoint(t, o, a, policyEndpoint{Id: uint32(i + 1)})
	}
	if err := d.SetSynLimits([]dataplane.SynLimit{{Target: target, Rate: 1, Burst: 3}}); err != nil {
		t.Fatal(err)
	}
	flooder, bystander := netip.MustParseAddr("10.244.2.10"), netip.MustParseAddr("10.244.2.20")
	sport := uint16(20000)
	syn := func(src, dst netip.Addr) bool {
		sport++
		return run(t, o.objs.ToPod, packet(src, dst, ir.TCP, sport, 80))
	}
	passed := 0
	for i := 0; i < 20; i++ {
		if syn(flooder, target) {
			passed++
		}
	}
	// A rate of 1/s adds at most a token over the loop's run.
	if passed < 3 || passed > 4 {
		t.Errorf("%d of 20 SYNs passed a bucket of 3 at 1/s", passed)
	}
	if !syn(bystander, target) {
		t.Error("another source shares the flooder's bucket")
	}
	if !syn(flooder, other) {
		t.Error("a pod with no limit was limited")
	}
	ack := packet(flooder, target, ir.TCP, 30000, 80)
	ack[14+20+13] = 0x10
	if !run(t, o.objs.ToPod, ack) {
		t.Error("a packet without SYN was limited")
	}
	c, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if int(c["drop_syn_limit"]) != 20-passed {
		t.Errorf("drop_syn_limit %d, want %d", c["drop_syn_limit"], 20-passed)
	}
	limited := 0
	for _, raw := range ringEvents(t, o) {
		if ev := d.event(&raw, time.Now()); ev.Drop == flow.DropSynLimit {
			limited++
			if ev.Allowed || ev.Tuple.Src.Addr() != flooder || ev.Tuple.Dst != netip.AddrPortFrom(target, 80) || ev.Direction != ir.Ingress {
				t.Errorf("limited event %+v", ev)
			}
		}
	}
	if limited != 20-passed {
		t.Errorf("%d limited events, want %d", limited, 20-passed)
	}
	if err := d.SetSynLimits(nil); err != nil {
		t.Fatal(err)
	}
	if !syn(flooder, target) {
		t.Error("a SYN was dropped after the limits were cleared")
	}
}

// TestQuarantinePrograms: a quarantined pod's packets, both ways and of established flows too,
// are dropped but those to an allowed port and their replies; other pods are untouched, and
// lifting the quarantine restores everything.
func TestQuarantinePrograms(t *testing.T) {
	netnstest.RequireRoot(t)
	o, d := loadedDataplane(t)
	q, p, x := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.1.6"), netip.MustParseAddr("10.244.2.9")
	for i, a := range []netip.Addr{q, p} {
		putEndpoint(t, o, a, policyEndpoint{Id: uint32(i + 1)})
	}
	established := packet(q, x, ir.TCP, 40000, 443)
	if !run(t, o.objs.FromPod, established) {
		t.Fatal("dropped before any quarantine")
	}
	if err := d.SetQuarantine(dataplane.Quarantine{Pods: []netip.Addr{q}, Allow: []dataplane.PortProtocol{{Protocol: ir.UDP, Port: 53}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		prog *ebpf.Program
		pkt  []byte
		pass bool
	}{
		{"egress TCP", o.objs.FromPod, packet(q, x, ir.TCP, 40001, 80), false},
		{"established flow", o.objs.FromPod, established, false},
		{"egress ICMP", o.objs.FromPod, packet(q, x, ir.Protocol(1), 0, 0), false},
		{"egress DNS", o.objs.FromPod, packet(q, x, ir.UDP, 40002, 53), true},
		{"DNS reply", o.objs.ToPod, packet(x, q, ir.UDP, 53, 40002), true},
		{"egress TCP 53 (not allowed)", o.objs.FromPod, packet(q, x, ir.TCP, 40003, 53), false},
		{"ingress TCP", o.objs.ToPod, packet(x, q, ir.TCP, 40004, 80), false},
		{"ingress ICMP", o.objs.ToPod, packet(x, q, ir.Protocol(1), 0, 0), false},
		{"another pod", o.objs.FromPod, packet(p, x, ir.TCP, 40005, 80), true},
	} {
		if got := run(t, tc.prog, tc.pkt); got != tc.pass {
			t.Errorf("%s: passed %v, want %v", tc.name, got, tc.pass)
		}
	}
	if c, _ := o.Counters(); c["drop_quarantine"] != 6 {
		t.Errorf("drop_quarantine %d, want 6", c["drop_quarantine"])
	}
	if err := d.SetQuarantine(dataplane.Quarantine{}); err != nil {
		t.Fatal(err)
	}
	if !run(t, o.objs.FromPod, established) || !run(t, o.objs.ToPod, packet(x, q, ir.TCP, 40006, 80)) {
		t.Error("dropped after the quarantine was lifted")
	}
}

// synWithMSS is a TCP SYN (flags as given) carrying an MSS option of mss (none when 0), after a
// no-op option so the walk over options is exercised.
func synWithMSS(src, dst netip.Addr, sport, dport uint16, flags byte, mss uint16) []byte {
	b := packet(src, dst, ir.TCP, sport, dport)
	if mss == 0 {
		b[14+20+13] = flags
		return b
	}
	b = append(b, 1, 2, 4, byte(mss>>8), byte(mss), 0, 0, 0) // NOP, MSS, padding to 8 bytes
	binary.BigEndian.PutUint16(b[14+2:], uint16(len(b)-14))
	b[14+20+12] = (20 + 8) / 4 << 4
	b[14+20+13] = flags
	return b
}

// TestShieldPrograms: the MSS shield drops SYNs and SYN-ACKs with an MSS option below the
// minimum toward a shielded pod, of established-looking flows too, and nothing else.
func TestShieldPrograms(t *testing.T) {
	netnstest.RequireRoot(t)
	o, d := loadedDataplane(t)
	shielded, other, client := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.1.6"), netip.MustParseAddr("10.244.2.9")
	for i, a := range []netip.Addr{shielded, other} {
		putEndpoint(t, o, a, policyEndpoint{Id: uint32(i + 1)})
	}
	if err := d.SetMSSShield(dataplane.MSSShield{Pods: []netip.Addr{shielded}, Min: 500}); err != nil {
		t.Fatal(err)
	}
	const syn, synack = 0x02, 0x12
	for _, tc := range []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"SYN, MSS 48", synWithMSS(client, shielded, 1000, 80, syn, 48), false},
		{"SYN-ACK, MSS 48", synWithMSS(client, shielded, 80, 1001, synack, 48), false},
		{"SYN, MSS 499", synWithMSS(client, shielded, 1002, 80, syn, 499), false},
		{"SYN, MSS 500", synWithMSS(client, shielded, 1003, 80, syn, 500), true},
		{"SYN, MSS 1460", synWithMSS(client, shielded, 1004, 80, syn, 1460), true},
		{"SYN, no MSS option", synWithMSS(client, shielded, 1005, 80, syn, 0), true},
		{"another pod, MSS 48", synWithMSS(client, other, 1006, 80, syn, 48), true},
	} {
		if got := run(t, o.objs.ToPod, tc.pkt); got != tc.pass {
			t.Errorf("%s: passed %v, want %v", tc.name, got, tc.pass)
		}
	}
	if c, _ := o.Counters(); c["drop_shield"] != 3 {
		t.Errorf("drop_shield %d, want 3", c["drop_shield"])
	}
	if err := d.SetMSSShield(dataplane.MSSShield{}); err != nil {
		t.Fatal(err)
	}
	if !run(t, o.objs.ToPod, synWithMSS(client, shielded, 1007, 80, syn, 48)) {
		t.Error("dropped after the shield was lifted")
	}
}

// TestBlocklist100k loads a feed-sized blocklist (100,000 prefixes of two lengths) and checks
// that a listed source is dropped by XDP and TC with its entry's counter moving, an unlisted one
// passes, and replacing the list with one that differs in a single entry writes just that.
func TestBlocklist100k(t *testing.T) {
	netnstest.RequireRoot(t)
	o, d := loadedDataplane(t)
	list := make([]netip.Prefix, 0, 100000)
	for i := 0; i < 100000; i++ {
		a := netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)})
		bits := 32
		if i%3 == 0 {
			a, bits = netip.AddrFrom4([4]byte{byte(20 + i>>16), byte(i >> 8), byte(i), 0}), 24
		}
		list = append(list, netip.PrefixFrom(a, bits))
	}
	start := time.Now()
	if err := d.SetBlocked(list); err != nil {
		t.Fatal(err)
	}
	t.Logf("100,000 prefixes written in %v", time.Since(start))
	listed, unlisted := netip.MustParseAddr("100.64.1.1"), netip.MustParseAddr("100.127.0.1")
	dst := netip.MustParseAddr("10.244.1.5")
	if ret, err := o.objs.XdpUplink.Run(&ebpf.RunOptions{Data: packet(listed, dst, ir.UDP, 1, 2)}); err != nil || ret != 1 {
		t.Errorf("XDP: a listed source: %d, %v; want dropped", ret, err)
	}
	if ret, err := o.objs.XdpUplink.Run(&ebpf.RunOptions{Data: packet(unlisted, dst, ir.UDP, 1, 2)}); err != nil || ret != 2 {
		t.Errorf("XDP: an unlisted source: %d, %v; want passed", ret, err)
	}
	if run(t, o.objs.FromUplink, packet(listed, dst, ir.TCP, 1, 2)) {
		t.Error("TC: a listed source passed")
	}
	var v policyBlockValue
	if err := o.objs.Blocklist.Lookup(blockKey(netip.MustParsePrefix("100.64.1.1/32")), &v); err != nil || v.Packets != 2 {
		t.Errorf("the entry's counter: %+v, %v; want 2 packets", v, err)
	}
	// One entry less: only it goes, the others keep their counts.
	if err := d.SetBlocked(list[:len(list)-1]); err != nil {
		t.Fatal(err)
	}
	if n := len(d.blockHave); n != 99999 {
		t.Errorf("%d prefixes held, want 99,999", n)
	}
	if err := o.objs.Blocklist.Lookup(blockKey(netip.MustParsePrefix("100.64.1.1/32")), &v); err != nil || v.Packets != 2 {
		t.Errorf("a kept entry's counter after the update: %+v, %v", v, err)
	}
}

// ringEvents reads the flow events the programs wrote so far.
func ringEvents(t *testing.T, o *Objects) []policyFlowEvent {
	t.Helper()
	rd, err := ringbuf.NewReader(o.objs.FlowEvents)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now().Add(time.Second))
	var out []policyFlowEvent
	for {
		rec, err := rd.Read()
		if err != nil {
			return out
		}
		var ev policyFlowEvent
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

// putEndpoint makes a the address of endpoint v in the tables in force (the next generation,
// as Sync would).
func putEndpoint(t *testing.T, o *Objects, a netip.Addr, v policyEndpoint) {
	t.Helper()
	c := *o.current()
	c.endpoints = maps.Clone(c.endpoints)
	if c.endpoints == nil {
		c.endpoints = map[uint32]policyEndpoint{}
	}
	c.endpoints[ipv4Key(a)] = v
	if err := o.write(&c, o.gen+1); err != nil {
		t.Fatal(err)
	}
}

// loadedDataplane is a Dataplane holding freshly loaded programs (closed when the test ends),
// for tests that run them directly.
func loadedDataplane(t *testing.T) (*Objects, *Dataplane) {
	t.Helper()
	o, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o, &Dataplane{objs: o}
}
