// Package node finds, in a node's network namespace, what the agent needs from the CNI set-up:
// a local pod's host-side interface, from the route to its address (routed veths, as the
// standard ptp plugin, Calico and the lab make them), and notifications when links or routes
// change, so that a pod whose interface appears after its Pod object is programmed at once.
package node

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Interfaces resolves local pods' interfaces in one network namespace.
type Interfaces struct {
	node string
	ns   netns.NsHandle
	h    *netlink.Handle
}

// Open returns a resolver for node working in the named network namespace ("" for the
// current one).
func Open(node, netnsName string) (*Interfaces, error) {
	var ns netns.NsHandle
	var err error
	if netnsName == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromName(netnsName)
	}
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", netnsName, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, err
	}
	return &Interfaces{node: node, ns: ns, h: h}, nil
}

// Close releases the namespace handle.
func (r *Interfaces) Close() {
	r.h.Close()
	r.ns.Close()
}

// Interface returns the host-side veth of a pod that lives on this node: the interface the
// route to the pod's address leaves through. Pods of other nodes, host-network pods, and pods
// whose interface does not exist yet (or is not a veth) report false.
func (r *Interfaces) Interface(p *ir.Pod) (string, bool) {
	if p.Node != r.node || p.HostNetwork || len(p.IPs) == 0 {
		return "", false
	}
	routes, err := r.h.RouteGet(net.IP(p.IP().AsSlice()))
	if err != nil || len(routes) == 0 {
		return "", false
	}
	link, err := r.h.LinkByIndex(routes[0].LinkIndex)
	if err != nil || link.Type() != "veth" {
		return "", false
	}
	return link.Attrs().Name, true
}

// Watch calls fn after every link change (with the link's name) or route change (with "")
// in the namespace until ctx ends.
func (r *Interfaces) Watch(ctx context.Context, fn func(link string)) error {
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &r.ns}); err != nil {
		return fmt.Errorf("watch links: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &r.ns}); err != nil {
		close(done)
		return fmt.Errorf("watch routes: %w", err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-links:
				if !ok {
					return
				}
				name := ""
				if u.Link != nil && u.Header.Type == unix.RTM_NEWLINK {
					name = u.Link.Attrs().Name
				}
				fn(name)
			case _, ok := <-routes:
				if !ok {
					return
				}
				fn("")
			}
		}
	}()
	return nil
}

// DefaultRouteLink names the interface of the namespace's IPv4 default route ("" without one).
func (r *Interfaces) DefaultRouteLink() string {
	routes, err := r.h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return ""
	}
	for _, rt := range routes {
		if rt.Dst == nil || rt.Dst.IP.IsUnspecified() && rt.Dst.Mask != nil && isZero(rt.Dst.Mask) {
			if l, err := r.h.LinkByIndex(rt.LinkIndex); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}

func isZero(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
