package ebpf

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/ir"
)

// vethMACs returns the MAC addresses of both ends of a host-side veth: its own, and its peer's
// inside the pod's namespace, read through the peer namespace's id (IFLA_TARGET_NETNSID), so
// the dataplane needs no handle on the pod's namespace. Runs in the node's namespace.
func vethMACs(l netlink.Link) (host, pod net.HardwareAddr, err error) {
	a := l.Attrs()
	if l.Type() != "veth" || a.ParentIndex == 0 || a.NetNsID < 0 {
		return nil, nil, fmt.Errorf("%s: not a veth with its peer in another namespace", a.Name)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.ParentIndex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(a.NetNsID))))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: peer: %w", a.Name, err)
	}
	if len(msgs) != 1 {
		return nil, nil, errors.New(a.Name + ": peer: no single answer")
	}
	peer, err := netlink.LinkDeserialize(nil, msgs[0])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: peer: %w", a.Name, err)
	}
	return a.HardwareAddr, peer.Attrs().HardwareAddr, nil
}

// interfaces describes the local pods' host-side veths: one link dump per Sync, and each
// veth's MACs read until they are known (they stay while its index does). Runs in the node's namespace; the
// caller holds d.mu.
func (d *Dataplane) interfaces(names map[ir.PodID]string) (map[ir.PodID]Interface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	out := make(map[ir.PodID]Interface, len(names))
	known := make(map[string]Interface, len(names))
	for id, name := range names {
		l, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("interface %s: not found", name)
		}
		i := Interface{Index: uint32(l.Attrs().Index)}
		if c, ok := d.ifaces[name]; ok && c.Index == i.Index {
			i = c
		} else if host, pod, err := vethMACs(l); err == nil && len(host) == 6 && len(pod) == 6 {
			// Without both MACs the pod is still enforced, only not handed packets directly.
			i.HostMAC, i.PodMAC = host, pod
		}
		out[id] = i
		if i.HostMAC != nil {
			known[name] = i // read again next time otherwise
		}
	}
	d.ifaces = known
	return out, nil
}
