// Package ctsweep removes kernel conntrack entries of connections that the current policy no
// longer allows (Sweep dumps the table; a Tracker follows it by conntrack events, so a sweep
// need not walk the kernel's whole table), and reads the entries' counts for flow records.
// Dataplanes accept packets of established connections without a new policy
// decision (that is what keeps replies flowing), so without a sweep a connection opened
// before a deny would outlive it. Connections the new policy still allows are left alone.
package ctsweep

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	mdnetlink "github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/nsexec"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Sweep deletes, in the named network namespace ("" for the current one), every IPv4
// conntrack entry whose connection the evaluator now denies. The decision uses the original
// source and the reply's source, which is the backend after Service DNAT: the same post-DNAT
// view policy is decided on. It returns how many entries it removed.
func Sweep(nsName string, ev *policy.Evaluator) (uint, error) {
	h, err := handle(nsName)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, filter{ev.NewAllowed()})
	if err != nil {
		return n, fmt.Errorf("sweep conntrack in %q: %w", nsName, err)
	}
	return n, nil
}

func handle(nsName string) (*netlink.Handle, error) {
	if nsName == "" {
		return netlink.NewHandle(netlink.FAMILY_V4)
	}
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", nsName, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

type filter struct{ ev *policy.Allowed }

// MatchConntrackFlow reports true for flows to delete.
func (f filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	fl, ok := Flow(flow)
	if !ok {
		return false
	}
	return !f.ev.Allowed(fl)
}

// Flow turns a conntrack entry into the flow policy decides: original source to the reply's
// source (the real destination after DNAT) on its port. Protocols policy does not cover
// (ICMP, ...) report false.
func Flow(c *netlink.ConntrackFlow) (policy.Flow, bool) {
	proto, ok := ir.ProtocolOf(c.Forward.Protocol)
	if !ok {
		return policy.Flow{}, false
	}
	src, ok1 := netip.AddrFromSlice(c.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(c.Reverse.SrcIP)
	if !ok1 || !ok2 {
		return policy.Flow{}, false
	}
	return policy.Flow{Src: src.Unmap(), Dst: dst.Unmap(), Protocol: proto, Port: c.Reverse.SrcPort}, true
}

// Counts reads, in the named network namespace, the packet and byte counts (both directions)
// of the kernel's conntrack entries for conns, matched as policy sees them (original source,
// the reply's source). The namespace's nf_conntrack_acct must be on (EnableAccounting);
// entries not found are Gone. It uses ti-mo/conntrack, which reads every protocol's ports
// (SCTP's too).
func Counts(nsName string, conns []flow.Conn) ([]flow.Counts, error) {
	cfg := &mdnetlink.Config{}
	if nsName != "" {
		ns, err := netns.GetFromName(nsName)
		if err != nil {
			return nil, fmt.Errorf("open netns %q: %w", nsName, err)
		}
		defer ns.Close()
		cfg.NetNS = int(ns)
	}
	c, err := conntrack.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("conntrack in %q: %w", nsName, err)
	}
	defer c.Close()
	entries, err := c.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("list conntrack in %q: %w", nsName, err)
	}
	type key struct {
		proto    uint8
		src, dst netip.AddrPort
	}
	byKey := make(map[key]*conntrack.Flow, len(entries))
	for i := range entries {
		e := &entries[i]
		o, r := e.TupleOrig, e.TupleReply
		byKey[key{o.Proto.Protocol, netip.AddrPortFrom(o.IP.SourceAddress.Unmap(), o.Proto.SourcePort),
			netip.AddrPortFrom(r.IP.SourceAddress.Unmap(), r.Proto.SourcePort)}] = e
	}
	out := make([]flow.Counts, len(conns))
	for i, cn := range conns {
		e, ok := byKey[key{uint8(cn.Tuple.Protocol), cn.Tuple.Src, cn.Tuple.Dst}]
		if !ok {
			out[i].Gone = true
			continue
		}
		out[i] = countsOf(e)
	}
	return out, nil
}

// countsOf reads an entry's counts, both directions summed.
func countsOf(e *conntrack.Flow) flow.Counts {
	c := flow.Counts{Packets: e.CountersOrig.Packets + e.CountersReply.Packets, Bytes: e.CountersOrig.Bytes + e.CountersReply.Bytes}
	if tcp := e.ProtoInfo.TCP; tcp != nil {
		c.TCPFlags, c.Closed = tcpStateFlags(tcp.State)
	}
	return c
}

// EnableAccounting turns on conntrack's packet and byte counters in the named network
// namespace (a per-namespace setting), so that Counts has counts to read.
func EnableAccounting(nsName string) error {
	const path = "/proc/sys/net/netfilter/nf_conntrack_acct"
	return nsexec.Do(nsName, func() error {
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
			return nil // already on (a container's /proc/sys is often read-only)
		}
		return os.WriteFile(path, []byte("1"), 0o644)
	})
}

// tcpStateFlags says what conntrack's TCP state implies was seen: an established connection
// saw SYN and ACK, a closing one also a FIN; CLOSE (after a FIN exchange or a RST) is closed.
func tcpStateFlags(state uint8) (flags uint8, closed bool) {
	const (
		established = 3
		timeWait    = 7
		closeState  = 8
	)
	switch {
	case state == established:
		return flow.FlagSYN | flow.FlagACK, false
	case state > established && state <= timeWait:
		return flow.FlagSYN | flow.FlagACK | flow.FlagFIN, true
	case state == closeState:
		return flow.FlagSYN | flow.FlagACK, true
	}
	return 0, false
}
