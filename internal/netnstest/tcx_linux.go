package netnstest

import (
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/rampart-sec/rampart/internal/nsexec"
)

// TCXPrograms counts the programs attached to an interface's TCX hooks of the given kinds
// (ingress, egress), asked in the named network namespace.
func TCXPrograms(ns, iface string, attach ...ebpf.AttachType) (int, error) {
	n := 0
	err := nsexec.Do(ns, func() error {
		i, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		for _, at := range attach {
			res, err := link.QueryPrograms(link.QueryOptions{Target: i.Index, Attach: at})
			if err != nil {
				return err
			}
			n += len(res.Programs)
		}
		return nil
	})
	return n, err
}

// TCXAttached reports whether a program is attached to an interface's TCX ingress, asked in
// the named network namespace (false when the interface does not exist).
func TCXAttached(ns, iface string) bool {
	n, _ := TCXPrograms(ns, iface, ebpf.AttachTCXIngress)
	return n > 0
}
