package netnstest

import (
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/rampart-sec/rampart/internal/nsexec"
)

// TCXAttached reports whether a program is attached to an interface's TCX ingress, asked in
// the named network namespace (false when the interface does not exist).
func TCXAttached(ns, iface string) bool {
	var n int
	_ = nsexec.Do(ns, func() error {
		i, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: i.Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		n = len(res.Programs)
		return nil
	})
	return n > 0
}
