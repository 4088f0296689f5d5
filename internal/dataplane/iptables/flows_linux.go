package iptables

import (
	"context"
	"net/netip"
	"time"

	"github.com/rampart-sec/rampart/internal/flow"
)

// ReadFlows delivers the flow events the rules log to the node's NFLOG group (Node.FlowLogGroup)
// in the named network namespace until ctx ends. Events the kernel could not queue are
// reported as lost, counted from the group's sequence numbers.
func (d *Dataplane) ReadFlows(ctx context.Context, netns string, sink flow.Sink) error {
	if d.node.FlowLogGroup == 0 {
		<-ctx.Done()
		return nil
	}
	s, err := openNFLOG(netns, d.node.FlowLogGroup)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.read(ctx, func(prefix string, ts time.Time, payload []byte, origDst netip.AddrPort, mark uint32) {
		ev, ok := packetEvent(payload)
		if !ok {
			return
		}
		d.mu.Lock()
		cur, prev := d.prefixes[0], d.prefixes[1]
		d.mu.Unlock()
		if origDst.IsValid() && origDst != ev.Tuple.Dst {
			ev.Service = origDst // translated: the client addressed a Service (ours or kube-proxy's)
		} else if fe, ok := frontend(mark, ev.Tuple, cur, prev); ok {
			ev.Service = fe // translated by this node's NAT
		}
		if dir, drop := decodeDropPrefix(prefix); drop != "" {
			ev.Time, ev.Direction, ev.Drop = ts, dir, drop
			sink.Observe(ev)
			return
		}
		dir, allowed, dec, ok := decodePrefix(prefix, cur, prev)
		if !ok {
			return // another tool's NFLOG rule on the same group
		}
		if !allowed && !dec.Known && !dec.Unresolved && cur != nil {
			dec.Isolating = cur.resolver.Isolating(ev.Tuple.Subject(dir), dir) // as of the rules in force
		}
		ev.Time, ev.Direction, ev.Allowed, ev.Decider = ts, dir, allowed, dec
		sink.Observe(ev)
	}, func(n uint64) { sink.Lost("netlink_overflow", n) })
}
