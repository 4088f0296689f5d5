package ebpf

import (
	"fmt"

	"github.com/rampart-sec/rampart/internal/dataplane"
)

// SetMSSShield replaces the MSS shield (dataplane.Shielder): SYNs toward the pods with an MSS
// option below the minimum are dropped where the pod's ingress is judged, before conntrack.
// Before the first Sync it is kept and written then. IPv6 addresses are ignored.
func (d *Dataplane) SetMSSShield(sh dataplane.MSSShield) error {
	want := map[uint32]policyShield{}
	if sh.Min > 0 {
		for _, a := range sh.Pods {
			if a = a.Unmap(); a.Is4() {
				want[ipv4Key(a)] = policyShield{MinMss: sh.Min}
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.shieldWant = want
	if d.objs == nil {
		return nil
	}
	return d.writeShieldsLocked(d.objs)
}

// writeShieldsLocked makes o's shield map hold d.shieldWant (nil: none given yet). The caller
// holds d.mu.
func (d *Dataplane) writeShieldsLocked(o *Objects) error {
	if d.shieldWant == nil {
		return nil
	}
	if err := replaceMap(o.objs.Shields, d.shieldWant); err != nil {
		return fmt.Errorf("shields: %w", err)
	}
	return nil
}
