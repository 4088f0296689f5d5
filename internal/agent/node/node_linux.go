// Package node finds, in a node's network namespace, what the agent needs from the CNI set-up:
// a local pod's host-side interface, from the route to its address (routed veths, as the
// standard ptp plugin, Calico and the lab make them), and notifications when links or routes
// change, so that a pod whose interface appears after its Pod object is programmed at once.
package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

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

	// While Watch runs, answers are remembered until the next link or route change: a sync
	// asks for every local pod, several times (two netlink requests each).
	mu       sync.Mutex
	watching bool
	known    map[netip.Addr]iface
	gen      uint64 // counts forget: an answer looked up across one is not remembered
}

type iface struct {
	name string
	ok   bool
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
	r.mu.Lock()
	i, ok := r.known[p.IP()]
	gen := r.gen
	r.mu.Unlock()
	if ok {
		return i.name, i.ok
	}
	i = r.lookup(p.IP())
	r.mu.Lock()
	if r.watching && r.gen == gen {
		r.known[p.IP()] = i
	}
	r.mu.Unlock()
	return i.name, i.ok
}

func (r *Interfaces) lookup(ip netip.Addr) iface {
	routes, err := r.h.RouteGet(net.IP(ip.AsSlice()))
	if err != nil || len(routes) == 0 {
		return iface{}
	}
	link, err := r.h.LinkByIndex(routes[0].LinkIndex)
	if err != nil || link.Type() != "veth" {
		return iface{}
	}
	return iface{link.Attrs().Name, true}
}

// forget drops the remembered answers (a link or route changed); watching says whether they
// may be remembered from now on.
func (r *Interfaces) forget(watching bool) {
	r.mu.Lock()
	r.known, r.watching = map[netip.Addr]iface{}, watching
	r.gen++
	r.mu.Unlock()
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
	r.forget(true)
	go func() {
		defer close(done)
		defer r.forget(false)
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
				r.forget(true)
				fn(name)
			case _, ok := <-routes:
				if !ok {
					return
				}
				r.forget(true)
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
