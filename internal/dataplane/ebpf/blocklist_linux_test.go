package ebpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

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
	o, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d := &Dataplane{objs: o}
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
	rd, err := ringbuf.NewReader(o.objs.FlowEvents)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now().Add(time.Second))
	n := 0
	for {
		rec, err := rd.Read()
		if err != nil {
			break
		}
		var ev policyFlowEvent
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Blocked != 1 || ev.Allowed != 0 {
			t.Errorf("event %+v: want blocked, not allowed", ev)
		}
		if n == 0 && (addrOf(ev.Saddr) != in || addrOf(ev.Daddr) != out || portOf(ev.Dport) != 80 || ev.Protocol != 6) {
			t.Errorf("first event %+v: want %s -> %s:80 TCP", ev, in, out)
		}
		n++
	}
	if n != 16 {
		t.Errorf("%d blocked events, want 16 (all under the sample limit)", n)
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
