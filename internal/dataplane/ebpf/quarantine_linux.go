package ebpf

import (
	"fmt"

	"github.com/rampart-sec/rampart/internal/dataplane"
)

// SetQuarantine replaces the quarantine (dataplane.Quarantiner): the quarantined pods' addresses
// and the ports they may still reach. When a write fails the previous quarantine is put back.
// Before the first Sync it is kept and written then. IPv6 addresses are ignored.
func (d *Dataplane) SetQuarantine(q dataplane.Quarantine) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.quarWant = &q
	if d.objs == nil {
		return nil
	}
	return d.writeQuarantineLocked(d.objs)
}

// writeQuarantineLocked makes o's quarantine maps hold d.quarWant (nil: none given yet). The
// caller holds d.mu.
func (d *Dataplane) writeQuarantineLocked(o *Objects) error {
	if d.quarWant == nil {
		return nil
	}
	pods := map[uint32]uint32{}
	for _, a := range d.quarWant.Pods {
		if a = a.Unmap(); a.Is4() {
			pods[ipv4Key(a)] = 1
		}
	}
	allow := map[policyQuarantinePort]uint32{}
	for _, p := range d.quarWant.Allow {
		allow[policyQuarantinePort{Protocol: uint8(p.Protocol), Port: portKey16(p.Port)}] = 1
	}
	// The ports first, so a pod quarantined anew never misses what it may do.
	if err := replaceMap(o.objs.QuarantineAllow, allow); err != nil {
		return fmt.Errorf("quarantine ports: %w", err)
	}
	if err := replaceMap(o.objs.Quarantine, pods); err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	return nil
}
