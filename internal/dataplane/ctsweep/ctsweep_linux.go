// Package ctsweep removes kernel conntrack entries of connections that the current policy no
// longer allows. Dataplanes accept packets of established connections without a new policy
// decision (that is what keeps replies flowing), so without a sweep a connection opened
// before a deny would outlive it. Connections the new policy still allows are left alone.
package ctsweep

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/rampart-sec/rampart/internal/ir"
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
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, filter{ev})
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

type filter struct{ ev *policy.Evaluator }

// MatchConntrackFlow reports true for flows to delete.
func (f filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	fl, ok := Flow(flow)
	if !ok {
		return false
	}
	return !f.ev.Verdict(fl).Allowed
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
