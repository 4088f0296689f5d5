package flow

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/ir"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func tuple(src, dst string) Tuple {
	return Tuple{Protocol: ir.TCP, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}
}

type fakeCounter map[Tuple]Counts

func (f fakeCounter) ConnCounts(conns []Conn) ([]Counts, error) {
	out := make([]Counts, len(conns))
	for i, c := range conns {
		v, ok := f[c.Tuple]
		if !ok {
			v.Gone = true
		}
		out[i] = v
	}
	return out, nil
}

func TestAggregatorFoldsPerConnection(t *testing.T) {
	log := NewLog(100, nil)
	a, err := NewAggregator(Config{Node: "n1", Flush: time.Second, Report: 10 * time.Second, Idle: 30 * time.Second}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	denied := tuple("10.0.0.1:40000", "10.0.0.2:80")
	other := tuple("10.0.0.1:40001", "10.0.0.2:80")
	for i := 0; i < 3; i++ { // a SYN and two retransmissions
		a.Observe(Event{Time: t0.Add(time.Duration(i) * time.Second), Direction: ir.Ingress, Tuple: denied, Bytes: 60, TCPFlags: FlagSYN})
	}
	a.Observe(Event{Time: t0, Direction: ir.Ingress, Tuple: other, Bytes: 60, TCPFlags: FlagSYN})
	a.Tick(t0.Add(3*time.Second), false)
	recs := log.Query(Filter{})
	if len(recs) != 2 {
		t.Fatalf("want 2 records (one per connection), got %d: %+v", len(recs), recs)
	}
	var r Record
	for _, x := range recs {
		if x.Source.Port == 40000 {
			r = x
		}
	}
	if r.Packets != 3 || r.Bytes != 180 || r.Verdict != Denied || r.TCPFlags != "SYN" || r.Node != "n1" ||
		!r.FirstSeen.Equal(t0) || !r.LastSeen.Equal(t0.Add(2*time.Second)) {
		t.Errorf("aggregated record: %+v", r)
	}
	// Nothing new: nothing published again before Report; once idle, nothing changed since.
	a.Tick(t0.Add(5*time.Second), false)
	a.Tick(t0.Add(40*time.Second), false)
	if n := len(log.Query(Filter{})); n != 2 {
		t.Errorf("unchanged connections were published again: %d records", n)
	}
	if a.Active() != 0 {
		t.Errorf("idle connections kept: %d", a.Active())
	}
}

func TestAggregatorReportsChangesAndCloses(t *testing.T) {
	log := NewLog(100, nil)
	conn := tuple("10.0.0.1:40000", "10.0.0.2:80")
	ct := fakeCounter{conn: {Packets: 1, Bytes: 60}}
	a, _ := NewAggregator(Config{Report: 10 * time.Second, Idle: 30 * time.Second}, log, ct)
	a.Observe(Event{Time: t0, Direction: ir.Egress, Allowed: true, Tuple: conn, Bytes: 60, TCPFlags: FlagSYN})
	a.Tick(t0.Add(time.Second), false) // the first record, from the event
	ct[conn] = Counts{Packets: 50, Bytes: 9000, TCPFlags: FlagSYN | FlagACK | FlagPSH}
	a.Tick(t0.Add(5*time.Second), false)  // counts read (2 s after the first record): changed, but Report has not passed
	a.Tick(t0.Add(12*time.Second), false) // no check due
	ct[conn] = Counts{Gone: true}         // closed
	a.Tick(t0.Add(16*time.Second), false) // the next check finds it gone: its last record
	recs := log.Query(Filter{})
	if len(recs) != 2 {
		t.Fatalf("want the first record and one update, got %d: %+v", len(recs), recs)
	}
	if recs[0].Packets != 1 || recs[1].Packets != 50 || recs[1].Bytes != 9000 || recs[1].TCPFlags != "SYN,PSH,ACK" {
		t.Errorf("records: %+v", recs)
	}
	if a.Active() != 0 {
		t.Error("a closed connection is still aggregated")
	}
}

func TestAggregatorBoundedAndCountsDrops(t *testing.T) {
	log := NewLog(10, nil)
	a, _ := NewAggregator(Config{MaxConnections: 5}, log, nil)
	for i := 0; i < 12; i++ {
		a.Observe(Event{Time: t0, Tuple: tuple("10.0.0.1:"+strconv.Itoa(1000+i), "10.0.0.2:80")})
	}
	a.Lost("kernel_ring_full", 4)
	if a.Active() != 5 {
		t.Errorf("active %d, want the bound 5", a.Active())
	}
	d := a.Dropped()
	if d["table_full"] != 7 || d["kernel_ring_full"] != 4 {
		t.Errorf("dropped %v, want table_full 7 and kernel_ring_full 4", d)
	}
	a.Tick(t0, true)
	if got := log.Total(); got != 5 {
		t.Errorf("published %d, want 5", got)
	}
}

// finderCounter is a dataplane that learns a connection's Service address some time after the
// connection's first event (conntrack reports it after the packet).
type finderCounter struct {
	fakeCounter
	known map[Tuple]netip.AddrPort
}

func (f finderCounter) ServiceOf(c Conn) (netip.AddrPort, bool) {
	s, ok := f.known[c.Tuple]
	return s, ok
}

// TestAggregatorAsksForTheService: a new allowed connection whose events name no Service waits
// (briefly) for the dataplane's tracking to name it; a connection that turns out not to be
// addressed to a Service is published without one once the wait is over; denied ones never wait,
// and are named when the dataplane knows at once (a connect-time balancer's note).
func TestAggregatorAsksForTheService(t *testing.T) {
	log := NewLog(100, nil)
	viaSvc, direct, denied := tuple("10.0.0.1:40000", "10.0.0.2:80"), tuple("10.0.0.1:40001", "10.0.0.2:80"), tuple("10.0.0.3:40000", "10.0.0.2:80")
	deniedSvc := tuple("10.0.0.3:40001", "10.0.0.2:80")
	dp := finderCounter{fakeCounter{viaSvc: {Packets: 1}, direct: {Packets: 1}}, map[Tuple]netip.AddrPort{deniedSvc: netip.MustParseAddrPort("10.96.0.10:8080")}}
	a, err := NewAggregator(Config{Node: "n1"}, log, dp)
	if err != nil {
		t.Fatal(err)
	}
	for _, tu := range []Tuple{viaSvc, direct} {
		a.Observe(Event{Time: t0, Direction: ir.Egress, Allowed: true, Tuple: tu, Bytes: 60, TCPFlags: FlagSYN})
	}
	a.Observe(Event{Time: t0, Direction: ir.Ingress, Tuple: denied, Bytes: 60, TCPFlags: FlagSYN})
	a.Observe(Event{Time: t0, Direction: ir.Ingress, Tuple: deniedSvc, Bytes: 60, TCPFlags: FlagSYN})
	a.Tick(t0.Add(10*time.Millisecond), false)
	recs := log.Query(Filter{})
	if len(recs) != 2 || recs[0].Verdict != Denied || recs[1].Verdict != Denied {
		t.Fatalf("before the tracking knows: want only the denied records, got %+v", recs)
	}
	for _, r := range recs {
		if named := r.Destination.Service != nil && r.Destination.Service.Port == 8080; named != (r.Source.Port == 40001) {
			t.Errorf("denied record %+v: Service %+v", r, r.Destination.Service)
		}
	}
	log = NewLog(100, nil)
	a, err = NewAggregator(Config{Node: "n1"}, log, dp)
	if err != nil {
		t.Fatal(err)
	}
	for _, tu := range []Tuple{viaSvc, direct} {
		a.Observe(Event{Time: t0, Direction: ir.Egress, Allowed: true, Tuple: tu, Bytes: 60, TCPFlags: FlagSYN})
	}
	a.Observe(Event{Time: t0, Direction: ir.Ingress, Tuple: denied, Bytes: 60, TCPFlags: FlagSYN})
	a.Tick(t0.Add(10*time.Millisecond), false)
	if recs := log.Query(Filter{}); len(recs) != 1 || recs[0].Verdict != Denied {
		t.Fatalf("before the tracking knows: want only the denied record, got %+v", recs)
	}
	dp.known[viaSvc] = netip.MustParseAddrPort("10.96.0.10:8080")
	a.Tick(t0.Add(20*time.Millisecond), false)
	recs = log.Query(Filter{})
	if len(recs) != 2 || recs[1].Destination.Service == nil || recs[1].Destination.Service.IP != "10.96.0.10" || recs[1].Destination.Service.Port != 8080 {
		t.Fatalf("once the tracking knows: %+v", recs)
	}
	a.Tick(t0.Add(time.Second), false)
	recs = log.Query(Filter{})
	if len(recs) != 3 || recs[2].Source.Port != 40001 || recs[2].Destination.Service != nil {
		t.Fatalf("after the wait, the direct connection without a Service: %+v", recs)
	}
}
