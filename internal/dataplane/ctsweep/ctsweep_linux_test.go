package ctsweep

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/policy"
)

const cluster = `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {pod: c}}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80, protocol: UDP}]}]
`

// clusterEvaluator evaluates cluster.
func clusterEvaluator(t *testing.T) *policy.Evaluator {
	t.Helper()
	objs, err := model.Decode(strings.NewReader(cluster), "t", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	return policy.New(rs)
}

func TestSweepRemovesOnlyDeniedConnections(t *testing.T) {
	ns := netnstest.New(t, "rt-ct")
	ev := clusterEvaluator(t)
	h, err := handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	add := func(src, dst, replySrc string, dport uint16) {
		f := &netlink.ConntrackFlow{FamilyType: netlink.FAMILY_V4, TimeOut: 100,
			Forward: netlink.IPTuple{SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4(), Protocol: 17, SrcPort: 40000, DstPort: dport},
			Reverse: netlink.IPTuple{SrcIP: net.ParseIP(replySrc).To4(), DstIP: net.ParseIP(src).To4(), Protocol: 17, SrcPort: dport, DstPort: 40000}}
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	add("10.0.0.2", "10.0.0.1", "10.0.0.1", 80)   // b -> a:80: allowed
	add("10.0.0.3", "10.0.0.1", "10.0.0.1", 80)   // c -> a:80: denied
	add("10.0.0.2", "10.96.0.1", "10.0.0.1", 81)  // b -> service -> a:81: denied after DNAT
	add("10.0.0.1", "10.0.0.3", "10.0.0.3", 5000) // a -> c: allowed (c is not isolated)

	n, err := Sweep(ns, ev)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d entries, want 2", n)
	}
	left, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range left {
		got = append(got, f.Forward.SrcIP.String()+">"+f.Reverse.SrcIP.String())
	}
	if strings.Join(got, ",") != "10.0.0.2>10.0.0.1,10.0.0.1>10.0.0.3" && strings.Join(got, ",") != "10.0.0.1>10.0.0.3,10.0.0.2>10.0.0.1" {
		t.Errorf("remaining entries %v", got)
	}
}

// TestTrackerFollowsEvents: the tracker finds the entries that predate it by a dump, then
// follows new and destroyed ones by events alone (no second dump), and after lost events (its
// listener detached, as when the socket overruns) dumps again, so no denied connection outlives
// a sweep either way.
func TestTrackerFollowsEvents(t *testing.T) {
	ns := netnstest.New(t, "rt-ctt")
	ev := clusterEvaluator(t)
	h, err := handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	entry := func(src, dst string, sport, dport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{FamilyType: netlink.FAMILY_V4, TimeOut: 100,
			Forward: netlink.IPTuple{SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4(), Protocol: 17, SrcPort: sport, DstPort: dport},
			Reverse: netlink.IPTuple{SrcIP: net.ParseIP(dst).To4(), DstIP: net.ParseIP(src).To4(), Protocol: 17, SrcPort: dport, DstPort: sport}}
	}
	add := func(f *netlink.ConntrackFlow) {
		t.Helper()
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	left := func() string {
		t.Helper()
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range flows {
			got = append(got, fmt.Sprintf("%s:%d>%s:%d", f.Forward.SrcIP, f.Forward.SrcPort, f.Forward.DstIP, f.Forward.DstPort))
		}
		sort.Strings(got)
		return strings.Join(got, ",")
	}
	tr := NewTracker(ns)
	defer tr.Close()
	sweep := func(want uint) {
		t.Helper()
		n, err := tr.Sweep(ev)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("swept %d entries, want %d", n, want)
		}
	}
	// has reports whether the tracker's copy holds the entry with this source port.
	has := func(sport uint16) bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for k := range tr.conns {
			if k.sport == sport {
				return true
			}
		}
		return false
	}
	// seen polls until the entry's events have arrived (they come asynchronously, in order).
	seen := func(sport uint16) {
		t.Helper()
		for i := 0; !has(sport); i++ {
			if i == 500 {
				t.Fatalf("the tracker never saw entry :%d", sport)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	add(entry("10.0.0.2", "10.0.0.1", 40000, 80)) // b -> a:80: allowed
	add(entry("10.0.0.3", "10.0.0.1", 40000, 80)) // c -> a:80: denied
	sweep(1)                                      // found by the first dump
	if got := left(); got != "10.0.0.2:40000>10.0.0.1:80" {
		t.Fatalf("after the first sweep: %s", got)
	}
	tr.mu.Lock()
	dumped := tr.dumped
	tr.mu.Unlock()

	add(entry("10.0.0.3", "10.0.0.1", 40001, 80))   // denied, seen by its NEW event
	add(entry("10.0.0.1", "10.0.0.3", 40002, 5000)) // allowed
	add(entry("10.0.0.2", "10.0.0.1", 40004, 80))   // allowed, then gone: its DESTROY event
	if n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, srcPort(40004)); err != nil || n != 1 {
		t.Fatalf("deleted %d entries: %v", n, err)
	}
	add(entry("10.0.0.1", "10.0.0.3", 40005, 5000)) // allowed; its event comes last
	seen(40005)
	if !has(40001) || !has(40002) || has(40004) {
		t.Fatalf("tracker's copy: 40001 %v, 40002 %v, 40004 (destroyed) %v", has(40001), has(40002), has(40004))
	}
	sweep(1)
	const rest = "10.0.0.1:40002>10.0.0.3:5000,10.0.0.1:40005>10.0.0.3:5000,10.0.0.2:40000>10.0.0.1:80"
	if got := left(); got != rest {
		t.Fatalf("after the second sweep: %s", got)
	}
	tr.mu.Lock()
	if !tr.dumped.Equal(dumped) {
		t.Error("the second sweep dumped the table; it should have used the events")
	}
	// Lost events: the listener is detached as on an overrun; an entry made meanwhile is only
	// in the kernel.
	_ = tr.stopLocked()
	tr.mu.Unlock()
	add(entry("10.0.0.3", "10.0.0.1", 40003, 80))
	sweep(1)
	if got := left(); got != rest {
		t.Fatalf("after lost events: %s", got)
	}
}

// srcPort matches conntrack entries by their original source port.
type srcPort uint16

func (p srcPort) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	return f.Forward.SrcPort == uint16(p)
}

// TestTrackerNamesFrontends: for a connection netfilter translated (a Service address DNATed to
// a backend), the tracker answers what the client addressed, from the flow as policy sees it
// (client to backend), found by the first dump or by events; untranslated and gone ones have none.
func TestTrackerNamesFrontends(t *testing.T) {
	ns := netnstest.New(t, "rt-ctf")
	h, err := handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	add := func(sport uint16, dst string, dport uint16) {
		t.Helper()
		f := &netlink.ConntrackFlow{FamilyType: netlink.FAMILY_V4, TimeOut: 100,
			Forward: netlink.IPTuple{SrcIP: net.ParseIP("10.0.0.2").To4(), DstIP: net.ParseIP(dst).To4(), Protocol: 6, SrcPort: sport, DstPort: dport},
			Reverse: netlink.IPTuple{SrcIP: net.ParseIP("10.0.0.1").To4(), DstIP: net.ParseIP("10.0.0.2").To4(), Protocol: 6, SrcPort: 80, DstPort: sport}}
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	backend := netip.MustParseAddrPort("10.0.0.1:80")
	client := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port) }
	tr := NewTracker(ns)
	defer tr.Close()
	add(41000, "10.96.0.10", 8080) // before the tracker: found by its first dump
	add(41001, "10.0.0.1", 80)     // not translated
	if _, err := tr.Sweep(policy.New(&ir.Ruleset{})); err != nil {
		t.Fatal(err)
	}
	add(41002, "10.96.0.11", 8081) // after: found by its NEW event
	svc := netip.MustParseAddrPort("10.96.0.11:8081")
	for i := 0; ; i++ {
		if fe, ok := tr.Frontend(6, client(41002), backend); ok && fe == svc {
			break
		}
		if i == 500 {
			t.Fatal("the translated connection's NEW event never named its frontend")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fe, ok := tr.Frontend(6, client(41000), backend); !ok || fe != netip.MustParseAddrPort("10.96.0.10:8080") {
		t.Errorf("dumped translated connection: %v %v", fe, ok)
	}
	if fe, ok := tr.Frontend(6, client(41001), backend); ok {
		t.Errorf("untranslated connection names frontend %v", fe)
	}
	if fe, ok := tr.Frontend(17, client(41000), backend); ok {
		t.Errorf("another protocol names frontend %v", fe)
	}
	if n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, srcPort(41002)); err != nil || n != 1 {
		t.Fatalf("deleted %d entries: %v", n, err)
	}
	for i := 0; ; i++ {
		if _, ok := tr.Frontend(6, client(41002), backend); !ok {
			break
		}
		if i == 500 {
			t.Fatal("a destroyed connection still names its frontend")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTrackerCounts reads connections' entries one by one, translated ones by the address the
// client addressed, and agrees with the dump (Counts).
func TestTrackerCounts(t *testing.T) {
	ns := netnstest.New(t, "rt-ctc")
	h, err := handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	add := func(sport uint16, dst string, dport uint16, state uint8) {
		t.Helper()
		f := &netlink.ConntrackFlow{FamilyType: netlink.FAMILY_V4, TimeOut: 100,
			Forward:   netlink.IPTuple{SrcIP: net.ParseIP("10.0.0.2").To4(), DstIP: net.ParseIP(dst).To4(), Protocol: 6, SrcPort: sport, DstPort: dport},
			Reverse:   netlink.IPTuple{SrcIP: net.ParseIP("10.0.0.1").To4(), DstIP: net.ParseIP("10.0.0.2").To4(), Protocol: 6, SrcPort: 80, DstPort: sport},
			ProtoInfo: &netlink.ProtoInfoTCP{State: state}}
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	const established, timeWait = 3, 7
	add(42000, "10.0.0.1", 80, established)  // not translated
	add(42001, "10.96.0.10", 8080, timeWait) // translated, closed
	tr := NewTracker(ns)
	defer tr.Close()
	if _, err := tr.Sweep(policy.New(&ir.Ruleset{})); err != nil {
		t.Fatal(err)
	}
	conn := func(sport uint16) flow.Conn {
		return flow.Conn{Direction: ir.Ingress, Tuple: flow.Tuple{Protocol: ir.TCP,
			Src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), sport), Dst: netip.MustParseAddrPort("10.0.0.1:80")}}
	}
	conns := []flow.Conn{conn(42000), conn(42001), conn(42002)}
	// More than one batch of requests, found and missing entries interleaved.
	for p := uint16(43000); p < 43000+getBatch+50; p++ {
		if p%3 != 0 {
			add(p, "10.0.0.1", 80, established)
		}
		conns = append(conns, conn(p))
	}
	got, err := tr.Counts(conns)
	if err != nil {
		t.Fatal(err)
	}
	dumped, err := Counts(ns, conns)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, dumped) {
		t.Errorf("tracker read %+v, the dump %+v", got, dumped)
	}
	if got[0].Gone || got[0].Closed || got[1].Gone || !got[1].Closed || !got[2].Gone {
		t.Errorf("want found, found closed, gone: %+v", got)
	}
	for i, c := range got[3:] {
		if want := (43000+i)%3 == 0; c.Gone != want {
			t.Errorf("entry %d: Gone %v, want %v", 43000+i, c.Gone, want)
		}
	}
	if got[0].TCPFlags == 0 {
		t.Errorf("established entry reports no TCP flags: %+v", got[0])
	}
}
