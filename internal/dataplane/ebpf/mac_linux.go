package ebpf

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// vethMACs returns the MAC addresses of both ends of a host-side veth: its own, and its peer's
// inside the pod's namespace, read through the peer namespace's id (IFLA_TARGET_NETNSID), so
// the dataplane needs no handle on the pod's namespace. Runs in the node's namespace.
func vethMACs(name string) (host, pod net.HardwareAddr, err error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, nil, err
	}
	a := l.Attrs()
	if l.Type() != "veth" || a.ParentIndex == 0 || a.NetNsID < 0 {
		return nil, nil, fmt.Errorf("%s: not a veth with its peer in another namespace", name)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.ParentIndex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(a.NetNsID))))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: peer: %w", name, err)
	}
	if len(msgs) != 1 {
		return nil, nil, errors.New(name + ": peer: no single answer")
	}
	peer, err := netlink.LinkDeserialize(nil, msgs[0])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: peer: %w", name, err)
	}
	return a.HardwareAddr, peer.Attrs().HardwareAddr, nil
}
