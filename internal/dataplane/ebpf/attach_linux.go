package ebpf

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Attach modes: TCX links (Linux 6.6+), or BPF filters on a clsact qdisc for older kernels.
const (
	AttachAuto   = ""       // TCX where the kernel has it, clsact otherwise
	AttachTCX    = "tcx"    // TCX only
	AttachClsact = "clsact" // clsact only
)

// attachment holds an interface's programs: on a pod veth from_pod on ingress and to_pod on
// egress; on the uplink from_uplink on ingress only (out is nil).
type attachment interface {
	// Update points both hooks at new programs, each in one kernel operation.
	Update(in, out *ebpf.Program) error
	// Pin makes the attachment outlive the process (TCX links pinned at base-in, base-out;
	// clsact filters outlive it anyway).
	Pin(base string) error
	// Detach removes the programs from the interface, and the pins.
	Detach() error
	// Release lets go of the process's handles: a pinned or clsact attachment stays in force,
	// an unpinned TCX link goes.
	Release() error
}

type tcxAttachment [2]link.Link

func attachTCX(ifindex int, in, out *ebpf.Program) (attachment, error) {
	li, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: in, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, err
	}
	if out == nil {
		return tcxAttachment{li, nil}, nil
	}
	lo, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: out, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		li.Close()
		return nil, err
	}
	return tcxAttachment{li, lo}, nil
}

// each runs fn on the links present (the egress one is absent on the uplink).
func (a tcxAttachment) each(fn func(i int, l link.Link) error) error {
	var errs []error
	for i, l := range a {
		if l != nil {
			errs = append(errs, fn(i, l))
		}
	}
	return errors.Join(errs...)
}

func (a tcxAttachment) Update(in, out *ebpf.Program) error {
	progs := [2]*ebpf.Program{in, out}
	return a.each(func(i int, l link.Link) error { return l.Update(progs[i]) })
}

func (a tcxAttachment) Pin(base string) error {
	return a.each(func(i int, l link.Link) error {
		if err := l.Pin(base + [2]string{"-in", "-out"}[i]); err != nil {
			return fmt.Errorf("pin TCX link: %w", err)
		}
		return nil
	})
}

func (a tcxAttachment) Detach() error {
	// Unpinning a link that was never pinned is a no-op.
	return a.each(func(_ int, l link.Link) error { return errors.Join(l.Unpin(), l.Close()) })
}

func (a tcxAttachment) Release() error {
	return a.each(func(_ int, l link.Link) error { return l.Close() })
}

// loadPinnedTCX adopts the TCX links a previous process pinned at base-in and base-out (the
// uplink has no base-out).
func loadPinnedTCX(base string) (attachment, error) {
	li, err := link.LoadPinnedLink(base+"-in", nil)
	if err != nil {
		return nil, err
	}
	lo, err := link.LoadPinnedLink(base+"-out", nil)
	if errors.Is(err, os.ErrNotExist) {
		return tcxAttachment{li, nil}, nil
	}
	if err != nil {
		li.Close()
		return nil, err
	}
	return tcxAttachment{li, lo}, nil
}

// clsactAttachment is the pre-TCX way: a clsact qdisc with one direct-action BPF filter per
// direction. Replacing a filter with the same handle and priority swaps its program atomically.
type clsactAttachment struct {
	ifindex int
	// shared: the qdisc is not ours alone (the uplink): Detach removes only our filter.
	shared bool
}

const (
	clsactPriority = 1
	clsactHandle   = 0x1
)

func attachClsact(ifindex int, in, out *ebpf.Program) (attachment, error) {
	shared := out == nil
	qdisc := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	// Add, not replace: an existing clsact (a previous process's) keeps its filters until
	// Update swaps them.
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("clsact qdisc: %w", err)
	}
	a := clsactAttachment{ifindex: ifindex, shared: shared}
	if err := a.Update(in, out); err != nil {
		a.Detach()
		return nil, err
	}
	return a, nil
}

func (a clsactAttachment) filter(parent uint32, p *ebpf.Program, name string) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: a.ifindex, Parent: parent, Handle: clsactHandle, Priority: clsactPriority, Protocol: unix.ETH_P_ALL},
		Fd:           p.FD(),
		Name:         name,
		DirectAction: true,
	}
}

func (a clsactAttachment) Update(in, out *ebpf.Program) error {
	name := "rampart_from_pod"
	if a.shared {
		name = "rampart_from_uplink"
	}
	if err := netlink.FilterReplace(a.filter(netlink.HANDLE_MIN_INGRESS, in, name)); err != nil {
		return fmt.Errorf("clsact ingress filter: %w", err)
	}
	if out == nil {
		return nil
	}
	if err := netlink.FilterReplace(a.filter(netlink.HANDLE_MIN_EGRESS, out, "rampart_to_pod")); err != nil {
		return fmt.Errorf("clsact egress filter: %w", err)
	}
	return nil
}

func (a clsactAttachment) Pin(string) error { return nil }

func (a clsactAttachment) Release() error { return nil }

// Detach removes the qdisc, and its filters with it; on a shared qdisc only our filter.
func (a clsactAttachment) Detach() error {
	if a.shared {
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: a.ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: clsactHandle, Priority: clsactPriority, Protocol: unix.ETH_P_ALL}}
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
			return err
		}
		return nil
	}
	qdisc := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: a.ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscDel(qdisc); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// attach picks the mechanism for mode: TCX, falling back to clsact when the kernel lacks TCX.
func attach(mode string, ifindex int, in, out *ebpf.Program) (attachment, error) {
	switch mode {
	case AttachClsact:
		return attachClsact(ifindex, in, out)
	case AttachTCX:
		return attachTCX(ifindex, in, out)
	}
	a, err := attachTCX(ifindex, in, out)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return attachClsact(ifindex, in, out)
	}
	return a, err
}
