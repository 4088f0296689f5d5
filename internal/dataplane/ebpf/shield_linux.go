package ebpf

import (
	"fmt"
	"time"

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

// SetConnLimits replaces the connection-limit shield's caps (dataplane.ConnLimiter): a bare SYN
// toward a pod from a source that holds its limit of open connections is dropped where the
// pod's ingress is judged, before policy. Before the first Sync it is kept and written then.
// IPv6 addresses are ignored.
func (d *Dataplane) SetConnLimits(limits []dataplane.ConnLimit) error {
	want := map[uint32]uint32{}
	for _, l := range limits {
		if a := l.Target.Unmap(); a.Is4() && l.Max > 0 {
			want[ipv4Key(a)] = l.Max
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.connWant = want
	if d.objs == nil {
		return nil
	}
	return d.writeConnLimitsLocked(d.objs)
}

// writeConnLimitsLocked makes o's connection-limit map hold d.connWant (nil: none given yet).
// The caller holds d.mu.
func (d *Dataplane) writeConnLimitsLocked(o *Objects) error {
	if d.connWant == nil {
		return nil
	}
	if err := replaceMap(o.objs.ConnLimits, d.connWant); err != nil {
		return fmt.Errorf("connection limits: %w", err)
	}
	return nil
}

// connIdle is how long a counted connection may go without a packet before a recount no
// longer holds it against its source: the programs keep flows until their map needs room, and
// a connection that ended unseen (its peer gone) must not count for ever.
const connIdle = 10 * time.Minute

// RecountConns sets each limited (pod, source)'s count of open connections to what conntrack
// holds: counted flows neither closed (FIN or RST seen) nor idle for connIdle. It corrects what
// the programs' counting cannot see (a connection that ends without a FIN or RST crossing the
// pod's interface) and the rare count two CPUs raced on; the threat engine calls it every few
// seconds while limits are in force. Connections opened while it runs may go uncounted until
// the next recount.
func (d *Dataplane) RecountConns() error {
	d.mu.Lock()
	o := d.objs
	d.mu.Unlock()
	if o == nil {
		return nil
	}
	now, err := ktimeNow()
	if err != nil {
		return err
	}
	counts := map[policySynBucketKey]uint32{}
	var k policyCtKey
	var v policyCtValue
	it := o.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		if v.Flags&(policyCtFlagCT_COUNTED|policyCtFlagCT_CLOSED) != policyCtFlagCT_COUNTED || now-v.SeenNs > uint64(connIdle) {
			continue
		}
		counts[policySynBucketKey{Target: k.Daddr, Source: k.Saddr}]++
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("recount connections: %w", err)
	}
	if err := replaceMap(o.objs.ConnCounts, counts); err != nil {
		return fmt.Errorf("recount connections: %w", err)
	}
	return nil
}
