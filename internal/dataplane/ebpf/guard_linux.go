package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
)

// Guard puts a pod interface the dataplane has not programmed yet under a drop-everything
// program (both directions), so that a new pod sends and receives nothing until its policy is
// in force. The next Sync that programs the pod switches the same attachment to the policy
// programs in one kernel operation; a guard whose interface went away is dropped then.
func (d *Dataplane) Guard(iface string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.links[iface]; ok {
		return nil
	}
	if _, ok := d.guards[iface]; ok {
		return nil
	}
	if d.deny == nil {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // TC_ACT_SHOT, TCX_DROP
		if err != nil {
			return fmt.Errorf("load the guard program: %w", err)
		}
		d.deny = p
	}
	return d.inNetns(func() error {
		l, err := netlink.LinkByName(iface)
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil // gone already: a deleted pod's veth announces its last state change
		}
		if err != nil {
			return fmt.Errorf("guard %s: %w", iface, err)
		}
		a, err := attach(d.Attach, l.Attrs().Index, d.deny, d.deny)
		if err != nil {
			return fmt.Errorf("guard %s: %w", iface, err)
		}
		d.guards[iface] = a
		return nil
	})
}

// takeGuard returns the guard attachment of an interface, removing it from the guards. The
// caller holds d.mu.
func (d *Dataplane) takeGuard(iface string) attachment {
	a, ok := d.guards[iface]
	if !ok {
		return nil
	}
	delete(d.guards, iface)
	return a
}

// dropGoneGuards detaches the guards of interfaces that no longer exist (pods that went before
// being programmed). The caller holds d.mu and is in the dataplane's namespace.
func (d *Dataplane) dropGoneGuards() error {
	var errs []error
	for name, a := range d.guards {
		if _, err := netlink.LinkByName(name); errors.As(err, &netlink.LinkNotFoundError{}) {
			errs = append(errs, a.Detach())
			delete(d.guards, name)
		}
	}
	return errors.Join(errs...)
}
