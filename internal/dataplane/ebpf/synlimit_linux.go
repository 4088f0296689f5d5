package ebpf

import (
	"errors"
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
	old, err := synLimits(m)
	if err != nil {
		return err
	}
	if err := replaceSynLimits(m, old, d.synWant); err != nil {
		// Put the previous limits back (what the failed write changed of them).
		cur, rerr := synLimits(m)
		if rerr == nil {
			rerr = replaceSynLimits(m, cur, old)
		}
		return errors.Join(fmt.Errorf("SYN limits: %w", err), rerr)
	}
	return nil
}

func replaceSynLimits(m *ebpf.Map, have, want map[uint32]policySynLimit) error {
	for k := range have {
		if _, ok := want[k]; !ok {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
		}
	}
	for k, v := range want {
		if h, ok := have[k]; ok && h == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			return err
		}
	}
	return nil
}

func synLimits(m *ebpf.Map) (map[uint32]policySynLimit, error) {
	out := map[uint32]policySynLimit{}
	var k uint32
	var v policySynLimit
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read SYN limits: %w", err)
	}
	return out, nil
}
