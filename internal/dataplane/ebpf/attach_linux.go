package ebpf

import (
	"errors"
	"fmt"

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

// attachment holds a pod veth's two programs: from_pod on ingress, to_pod on egress.
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
	lo, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: out, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		li.Close()
		return nil, err
	}
	return tcxAttachment{li, lo}, nil
}

func (a tcxAttachment) Update(in, out *ebpf.Program) error {
	return errors.Join(a[0].Update(in), a[1].Update(out))
}

func (a tcxAttachment) Pin(base string) error {
	for i, suffix := range []string{"-in", "-out"} {
		if err := a[i].Pin(base + suffix); err != nil {
			return fmt.Errorf("pin TCX link: %w", err)
		}
	}
	return nil
}

func (a tcxAttachment) Detach() error {
	// Unpinning a link that was never pinned is a no-op.
	return errors.Join(a[0].Unpin(), a[1].Unpin(), a[0].Close(), a[1].Close())
}

func (a tcxAttachment) Release() error { return errors.Join(a[0].Close(), a[1].Close()) }

// loadPinnedTCX adopts the TCX links a previous process pinned at base-in and base-out.
func loadPinnedTCX(base string) (attachment, error) {
	li, err := link.LoadPinnedLink(base+"-in", nil)
	if err != nil {
		return nil, err
	}
	lo, err := link.LoadPinnedLink(base+"-out", nil)
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
}

const (
	clsactPriority = 1
	clsactHandle   = 0x1
)

func attachClsact(ifindex int, in, out *ebpf.Program) (attachment, error) {
	qdisc := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	// Add, not replace: an existing clsact (a previous process's) keeps its filters until
	// Update swaps them.
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("clsact qdisc: %w", err)
	}
	a := clsactAttachment{ifindex: ifindex}
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
	if err := netlink.FilterReplace(a.filter(netlink.HANDLE_MIN_INGRESS, in, "rampart_from_pod")); err != nil {
		return fmt.Errorf("clsact ingress filter: %w", err)
	}
	if err := netlink.FilterReplace(a.filter(netlink.HANDLE_MIN_EGRESS, out, "rampart_to_pod")); err != nil {
		return fmt.Errorf("clsact egress filter: %w", err)
	}
	return nil
}

func (a clsactAttachment) Pin(string) error { return nil }

func (a clsactAttachment) Release() error { return nil }

// Detach removes the qdisc, and its filters with it.
func (a clsactAttachment) Detach() error {
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
