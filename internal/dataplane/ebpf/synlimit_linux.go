package ebpf

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/rampart-sec/rampart/internal/dataplane"
)

// SetSynLimits replaces the SYN rate limits (dataplane.SynLimiter): toward each target, every
// source gets a token bucket in the programs (bpf/policy.c, syn_over_limit), checked for each
// new TCP connection attempt before policy. When a write fails the previous limits are put
// back. Before the first Sync the limits are kept and written then. IPv6 targets are ignored.
func (d *Dataplane) SetSynLimits(limits []dataplane.SynLimit) error {
	want := map[uint32]policySynLimit{}
	for _, l := range limits {
		if a := l.Target.Unmap(); a.Is4() {
			want[ipv4Key(a)] = policySynLimit{Rate: max(l.Rate, 1), Burst: max(l.Burst, 1)}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.synWant = want
	if d.objs == nil {
		return nil
	}
	return d.writeSynLimitsLocked(d.objs.objs.SynLimits)
}

// writeSynLimitsLocked makes m hold d.synWant (nil: none given yet, leave m as adopted). The
// caller holds d.mu.
func (d *Dataplane) writeSynLimitsLocked(m *ebpf.Map) error {
	if d.synWant == nil {
		return nil
	}
	if err := replaceMap(m, d.synWant); err != nil {
		return fmt.Errorf("SYN limits: %w", err)
	}
	return nil
}
