package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

// packet builds an Ethernet/IPv4 frame with a transport header carrying the ports.
func packet(src, dst netip.Addr, proto ir.Protocol, sport, dport uint16) []byte {
	b := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = byte(proto)
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	l4 := ip[20:]
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	if proto == ir.TCP {
		l4[12] = 5 << 4
		l4[13] = 0x02 // SYN
	}
	return b
}

func run(t *testing.T, prog *ebpf.Program, pkt []byte) bool {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret == 0 // TC_ACT_OK; TC_ACT_SHOT is 2
}

// TestProgramsMatchEvaluator runs crafted packets through the loaded programs (the egress
// program of the source's endpoint, then the ingress program of the destination's) with the
// maps filled from the tables, and compares with the evaluator on random policy sets. Each flow
// uses fresh source ports so conntrack from earlier flows does not decide it; a reply then
// passes both programs because the flow was allowed. The policy sets follow one another on the
// same loaded programs, as Sync applies them: each is written as the difference to the tables
// of two sets before (the slot not in force), and the maps in force must then hold exactly the
// new tables.
func TestProgramsMatchEvaluator(t *testing.T) {
	netnstest.RequireRoot(t)
	base, err := model.Decode(strings.NewReader(randpolicy.Cluster()), "cluster", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	external := netip.MustParseAddr("8.8.8.8")
	sport := uint16(10000)
	o, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var b Builder
	// apply writes a policy set as Sync does and checks the maps and the programs' verdicts.
	apply := func(rs *ir.Ruleset, y, what string) {
		tables, err := b.Build(rs, func(*ir.Pod) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		want := o.contentOf(rs, tables, func(ir.PodID) Interface { return Interface{} })
		if err := o.write(want, o.gen+1); err != nil {
			t.Fatal(err)
		}
		checkMapsHold(t, o, want)
		ev := policy.New(rs)
		addrs := []netip.Addr{external}
		for _, p := range rs.Pods {
			addrs = append(addrs, p.IP())
		}
		for _, src := range addrs {
			for _, dst := range addrs {
				if src == dst {
					continue
				}
				for _, proto := range ir.Protocols {
					for _, port := range []uint16{79, 80, 81, 1000} {
						sport++
						f := policy.Flow{Src: src, Dst: dst, Protocol: proto, Port: port}
						pkt := packet(src, dst, proto, sport, port)
						got := run(t, o.objs.FromPod, pkt) && run(t, o.objs.ToPod, pkt)
						if want := ev.Verdict(f).Allowed; got != want {
							min := randpolicy.Shrink(y, func(c string) bool {
								sport++
								g, w, ok := programVerdict(t, base, c, f, sport)
								return ok && g != w
							})
							t.Fatalf("%s: %v: programs say %v, evaluator %v; smallest policy set that disagrees:\n%s", what, f, got, want, min)
						}
						if got { // the reply of an allowed flow passes both ways
							reply := packet(dst, src, proto, port, sport)
							if !run(t, o.objs.FromPod, reply) || !run(t, o.objs.ToPod, reply) {
								t.Fatalf("%s: reply of allowed %v dropped", what, f)
							}
						}
					}
				}
			}
		}
	}
	for seed := int64(0); seed < 25; seed++ {
		rs, y := randomRuleset(t, base, seed)
		apply(rs, y, fmt.Sprintf("seed %d", seed))
		// The same sets, renamed and port 80 moved: the Builder and the content reuse what
		// did not change, and only the rest is written.
		y2 := strings.ReplaceAll(reverseNames(y), "port: 80,", "port: 79,")
		rs2, _, err := compileSet(base, y2)
		if err != nil {
			t.Fatal(err)
		}
		apply(rs2, y2, fmt.Sprintf("seed %d, renamed and port 80 moved", seed))
	}
}

// checkMapsHold reads the maps of the slot in force back and compares them with want.
func checkMapsHold(t *testing.T, o *Objects, want *content) {
	t.Helper()
	in := o.inner(o.gen & 1)
	var errs []error
	errs = append(errs, mapHolds(*in[0], want.endpoints), mapHolds(*in[1], want.ipcache.m), mapHolds(*in[2], want.policyMap()),
		mapHolds(*in[3], want.services), mapHolds(*in[4], want.backends))
	var active uint32
	if err := o.objs.Active.Lookup(uint32(0), &active); err != nil || active != o.gen {
		errs = append(errs, fmt.Errorf("active generation %d (%v), want %d", active, err, o.gen))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func mapHolds[K, V comparable](m *ebpf.Map, want map[K]V) error {
	got := map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		got[k] = v
	}
	if err := it.Err(); err != nil {
		return err
	}
	if len(got) != len(want) {
		return fmt.Errorf("%s holds %d entries, want %d", m, len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			return fmt.Errorf("%s: %+v holds %+v (%v), want %+v", m, k, g, ok, w)
		}
	}
	return nil
}

// programVerdict runs one new flow through freshly loaded programs for the policy set y on the
// cluster base, and returns the programs' verdict and the evaluator's (ok is false when y does
// not compile, so a shrinking step that breaks it is not taken for the failure).
func programVerdict(t *testing.T, base []model.Object, y string, f policy.Flow, sport uint16) (got, want, ok bool) {
	rs, tables, err := compileSet(base, y)
	if err != nil {
		return false, false, false
	}
	o := loadFilled(t, rs, tables)
	defer o.Close()
	pkt := packet(f.Src, f.Dst, f.Protocol, sport, f.Port)
	got = run(t, o.objs.FromPod, pkt) && run(t, o.objs.ToPod, pkt)
	return got, policy.New(rs).Verdict(f).Allowed, true
}

// TestMidStreamPacketStartsNoFlow: with no tracked flow (a policy change swept it), a TCP
// packet without SYN from the side policy does not restrict (a server retransmitting) passes,
// but does not make the other side's packets its replies: the client's packets are still
// judged, and denied, by the server's ingress policy. A SYN does start a flow whose replies
// pass.
func TestMidStreamPacketStartsNoFlow(t *testing.T) {
	netnstest.RequireRoot(t)
	y := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all-in, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress]}
`
	base, err := model.Decode(strings.NewReader(randpolicy.Cluster()), "cluster", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, tables, err := compileSet(base, y)
	if err != nil {
		t.Fatal(err)
	}
	o := loadFilled(t, rs, tables)
	defer o.Close()
	server, client := netip.MustParseAddr(randpolicy.PodIP("x", "a")), netip.MustParseAddr(randpolicy.PodIP("y", "b"))
	through := func(pkt []byte) bool { return run(t, o.objs.FromPod, pkt) && run(t, o.objs.ToPod, pkt) }
	withFlags := func(pkt []byte, flags byte) []byte { pkt[14+20+13] = flags; return pkt }

	// The server's retransmission (ACK|PSH) to the client: its egress is not restricted.
	if !through(withFlags(packet(server, client, ir.TCP, 80, 40000), 0x18)) {
		t.Fatal("the server's mid-stream packet was dropped: its egress allows everything")
	}
	if through(withFlags(packet(client, server, ir.TCP, 40000, 80), 0x10)) {
		t.Fatal("the client's ACK passed as a reply of the server's mid-stream packet; the server's ingress denies it")
	}
	// A SYN-ACK does not start a flow either.
	if !through(withFlags(packet(server, client, ir.TCP, 80, 40001), 0x12)) {
		t.Fatal("the server's SYN-ACK was dropped")
	}
	if through(withFlags(packet(client, server, ir.TCP, 40001, 80), 0x10)) {
		t.Fatal("the client's ACK passed as a reply of a SYN-ACK; the server's ingress denies it")
	}
	// A connection the server opens: the client's replies pass.
	if !through(packet(server, client, ir.TCP, 40002, 8080)) {
		t.Fatal("the server's SYN was dropped")
	}
	if !through(withFlags(packet(client, server, ir.TCP, 8080, 40002), 0x12)) {
		t.Fatal("the reply to the server's own connection was dropped")
	}
}

// loadFilled loads programs with the tables of rs in force (no interfaces).
func loadFilled(t *testing.T, rs *ir.Ruleset, tables *Tables) *Objects {
	t.Helper()
	o, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Fill(rs, tables, func(ir.PodID) Interface { return Interface{} }); err != nil {
		o.Close()
		t.Fatal(err)
	}
	return o
}
