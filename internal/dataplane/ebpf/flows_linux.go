package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

// ReadFlows delivers the programs' flow events to sink until ctx ends. It waits for the first
// Sync (which creates, or adopts, the ring buffer), then reads the ring, which every later
// generation shares; events lost in the kernel (ring full) are reported from the programs'
// counter.
func (d *Dataplane) ReadFlows(ctx context.Context, sink flow.Sink) error {
	select {
	case <-d.synced:
	case <-ctx.Done():
		return nil
	}
	d.mu.Lock()
	if d.objs == nil {
		d.mu.Unlock()
		return errors.New("flows: dataplane closed")
	}
	ring, err := d.objs.objs.FlowEvents.Clone()
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("flows: %w", err)
	}
	defer ring.Close()
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		return fmt.Errorf("flows: ring buffer reader: %w", err)
	}
	go func() { <-ctx.Done(); rd.Close() }()
	boot := bootTime()
	var lostSeen uint64
	var lostRead time.Time
	var rec ringbuf.Record
	for {
		// The programs do not wake the reader per event (only when the ring fills): each
		// deadline drains what arrived since the last.
		rd.SetDeadline(time.Now().Add(flowDrain))
		err := rd.ReadInto(&rec)
		switch {
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
		case err != nil:
			return fmt.Errorf("flows: read ring buffer: %w", err)
		case len(rec.RawSample) < int(unsafe.Sizeof(policyFlowEvent{})):
			sink.Lost("malformed", 1)
			continue
		default:
			// The sample is the C struct as the programs wrote it, in this machine's byte order.
			ev := *(*policyFlowEvent)(unsafe.Pointer(&rec.RawSample[0]))
			sink.Observe(d.event(&ev, boot))
		}
		// The programs' count of events the ring had no room for, read once a second, not per
		// event (a lock and a map lookup).
		if time.Since(lostRead) >= time.Second {
			lostRead = time.Now()
			if n, err := d.counter(cFlowLost); err == nil && n > lostSeen {
				sink.Lost("kernel_ring_full", n-lostSeen)
				lostSeen = n
			}
		}
	}
}

// flowDrain is how often the reader drains the ring: the delay a record may see, against a
// wake-up per event.
const flowDrain = 100 * time.Millisecond

// cFlowLost indexes the counter of events the ring had no room for.
var cFlowLost = uint32(slices.Index(CounterNames, "flow_events_lost"))

func (d *Dataplane) counter(i uint32) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, errors.New("not synced")
	}
	return sumPerCPU(d.objs.objs.Counters, i)
}

// dropKinds names the programs' drop kinds (enum drop_kind).
var dropKinds = map[policyDropKind]flow.DropKind{
	policyDropKindDROP_BLOCKLIST: flow.DropBlocklist, policyDropKindDROP_SYN_LIMIT: flow.DropSynLimit,
	policyDropKindDROP_QUARANTINE: flow.DropQuarantine, policyDropKindDROP_SHIELD: flow.DropShield, policyDropKindDROP_CONN_LIMIT: flow.DropConnLimit,
}

// event converts a kernel event, resolving its rule id with its generation's table.
func (d *Dataplane) event(ev *policyFlowEvent, boot time.Time) flow.Event {
	proto, _ := ir.ProtocolOf(ev.Protocol)
	out := flow.Event{
		Time:      boot.Add(time.Duration(ev.TsNs)),
		Direction: ir.Direction(ev.Direction),
		Allowed:   ev.Allowed != 0,
		Tuple: flow.Tuple{Protocol: proto,
			Src: netip.AddrPortFrom(addrOf(ev.Saddr), portOf(ev.Sport)),
			Dst: netip.AddrPortFrom(addrOf(ev.Daddr), portOf(ev.Dport))},
		Bytes:    uint64(ev.Len),
		TCPFlags: ev.TcpFlags,
		Drop:     dropKinds[policyDropKind(ev.Blocked)],
	}
	if ev.Blocked != 0 {
		return out // decided by a threat response, not by a rule of any generation
	}
	if ev.OrigDaddr != 0 {
		out.Service = netip.AddrPortFrom(addrOf(ev.OrigDaddr), portOf(ev.OrigDport))
	}
	d.mu.Lock()
	g, ok := d.gens[ev.Generation]
	d.mu.Unlock()
	switch {
	case ev.Rule != 0:
		out.Decider = g.rules.Decider(ev.Rule)
	case !out.Allowed && ok:
		// Isolation: the NetworkPolicies that selected the pod when this generation decided.
		out.Decider.Isolating = g.resolver.Isolating(out.Tuple.Subject(out.Direction), out.Direction)
	}
	return out
}

// ConnCounts reads connections' counts from the programs' conntrack: both entries (the
// deciding endpoint's forward and reply) summed. A connection with neither is Gone.
func (d *Dataplane) ConnCounts(conns []flow.Conn) ([]flow.Counts, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, errors.New("not synced")
	}
	out := make([]flow.Counts, len(conns))
	for i, c := range conns {
		ep, ok := d.objs.current().endpoints[ipv4Key(c.Tuple.Subject(c.Direction))]
		if !ok {
			out[i].Gone = true
			continue
		}
		k := policyCtKey{Endpoint: ep.Id, Saddr: ipv4Key(c.Tuple.Src.Addr()), Daddr: ipv4Key(c.Tuple.Dst.Addr()),
			Sport: portKey16(c.Tuple.Src.Port()), Dport: portKey16(c.Tuple.Dst.Port()), Protocol: uint32(c.Tuple.Protocol)}
		found := false
		for _, key := range []policyCtKey{k, reverse(k)} {
			var v policyCtValue
			if err := d.objs.objs.Conntrack.Lookup(key, &v); err != nil {
				if !errors.Is(err, ebpf.ErrKeyNotExist) {
					return nil, err
				}
				continue
			}
			found = true
			out[i].Packets += v.Packets
			out[i].Bytes += v.Bytes
			out[i].TCPFlags |= v.TcpFlags
		}
		out[i].Gone = !found
	}
	return out, nil
}

// bootTime is when CLOCK_MONOTONIC was zero (bpf_ktime_get_ns counts from there).
func bootTime() time.Time {
	now, err := ktimeNow()
	if err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(now))
}

// ktimeNow reads the programs' clock (bpf_ktime_get_ns: CLOCK_MONOTONIC) in nanoseconds.
func ktimeNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return uint64(ts.Nano()), nil
}
