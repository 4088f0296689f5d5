package ebpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// uplinkPin names the uplink's pinned link (pod veths are named "v<hex>", so no clash).
const uplinkPin = "uplink"

// syncHost makes the node's own packets to Services translated, as pods' are on their veths:
// the Service range is routed through the route program (LWT xmit), which sends a packet to a
// backend and has the kernel route it again, and the uplink's ingress program reverses the
// translation on replies from other nodes (replies from local pods are reversed by their
// veth program). Nothing to do without Node.Uplink. Runs in the node's namespace.
func (d *Dataplane) syncHost(o *Objects) error {
	if d.node.Uplink == "" {
		return nil
	}
	up, err := netlink.LinkByName(d.node.Uplink)
	if err != nil {
		return fmt.Errorf("uplink %s: %w", d.node.Uplink, err)
	}
	if err := d.attachUplink(up.Attrs().Index, o); err != nil {
		return err
	}
	if err := writeHostConfig(up, o); err != nil {
		return err
	}
	if err := d.attachXDP(up.Attrs().Index, o); err != nil {
		return err
	}
	svc := o.svcPrefix()
	if svc.IsValid() {
		enc := &xmitEncap{fd: o.objs.SvcXmit.FD(), name: "rampart_svc_xmit"}
		r := &netlink.Route{LinkIndex: up.Attrs().Index, Dst: prefixNet(svc), Scope: netlink.SCOPE_LINK, Encap: enc}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s through the Service program: %w", svc, err)
		}
	}
	return d.dropServiceRoutes(up, svc)
}

// writeHostConfig tells the programs the uplink and the node's address on it, the source of
// outside clients' flows sent on to other nodes' backends (uplink_dnat in bpf/policy.c).
func writeHostConfig(up netlink.Link, o *Objects) error {
	addrs, err := netlink.AddrList(up, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", up.Attrs().Name, err)
	}
	hc := policyHostConfig{Uplink: uint32(up.Attrs().Index)}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && a.Scope == int(netlink.SCOPE_UNIVERSE) {
			hc.Addr = ipv4Key(ip)
			break
		}
	}
	if err := o.objs.Host.Put(uint32(0), hc); err != nil {
		return fmt.Errorf("write host config: %w", err)
	}
	return nil
}

// xmitEncap is an LWT encapsulation running one BPF program at xmit. netlink's own BpfEncap
// writes a package variable that every netlink decoder reads, a data race when two nodes'
// dataplanes (the lab's in-process agents) sync at once; this one encodes the same attributes
// without it.
type xmitEncap struct {
	fd   int
	name string
}

func (e *xmitEncap) Type() int { return nl.LWTUNNEL_ENCAP_BPF }

func (e *xmitEncap) Encode() ([]byte, error) {
	a := nl.NewRtAttr(nl.LWT_BPF_XMIT, nil)
	a.AddRtAttr(nl.LWT_BPF_PROG_FD, nl.Uint32Attr(uint32(e.fd)))
	a.AddRtAttr(nl.LWT_BPF_PROG_NAME, nl.ZeroTerminated(e.name))
	return a.Serialize(), nil
}

func (e *xmitEncap) Decode([]byte) error { return errors.New("xmitEncap: encode only") }

func (e *xmitEncap) String() string { return "bpf xmit " + e.name }

func (e *xmitEncap) Equal(o netlink.Encap) bool {
	x, ok := o.(*xmitEncap)
	return ok && *x == *e
}

func (d *Dataplane) attachUplink(ifindex int, o *Objects) error {
	if d.uplink != nil {
		return d.uplink.Update(o.objs.FromUplink, nil)
	}
	if a := d.adoptLink(uplinkPin); a != nil {
		if err := a.Update(o.objs.FromUplink, nil); err == nil {
			d.uplink = a
			return nil
		}
		a.Detach()
	}
	a, err := attach(d.Attach, ifindex, o.objs.FromUplink, nil)
	if err != nil {
		return fmt.Errorf("attach to uplink %s: %w", d.node.Uplink, err)
	}
	d.uplink = a
	if d.PinDir != "" {
		return a.Pin(d.linkPin(uplinkPin))
	}
	return nil
}

// dropServiceRoutes deletes the routes through a BPF program on the uplink other than keep's
// (all of them when keep is invalid): the Service range moved, or the dataplane goes.
func (d *Dataplane) dropServiceRoutes(up netlink.Link, keep netip.Prefix) error {
	routes, err := netlink.RouteList(up, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range routes {
		if r.Encap == nil || r.Encap.Type() != nl.LWTUNNEL_ENCAP_BPF || r.Dst == nil {
			continue
		}
		if keep.IsValid() && r.Dst.String() == keep.String() {
			continue
		}
		errs = append(errs, netlink.RouteDel(&r))
	}
	return errors.Join(errs...)
}

// removeHost takes the uplink program and the Service route away (detach), or only lets go of
// the process's handle on the uplink's link (the route holds its program by itself).
func (d *Dataplane) removeHost(detach bool) error {
	if d.node.Uplink == "" {
		return nil
	}
	errs := []error{d.removeXDP(detach)}
	if d.uplink != nil {
		if detach {
			errs = append(errs, d.uplink.Detach())
		} else {
			errs = append(errs, d.uplink.Release())
		}
		d.uplink = nil
	}
	if detach {
		if up, err := netlink.LinkByName(d.node.Uplink); err == nil {
			errs = append(errs, d.dropServiceRoutes(up, netip.Prefix{}))
		}
	}
	return errors.Join(errs...)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
