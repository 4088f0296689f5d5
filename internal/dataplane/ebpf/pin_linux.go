package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
)

// Pinned objects under PinDir: links/<interface>-in|-out, conntrack, revnat, flow_events.
const (
	pinLinks     = "links"
	pinConntrack = "conntrack"
	pinRevnat    = "revnat"
	pinFlows     = "flow_events"
	pinBlocklist = "blocklist"
	pinSynLimits = "syn_limits"
	pinSynBucket = "syn_buckets"
	pinQuar      = "quarantine"
	pinQuarAllow = "quarantine_allow"
	pinShields   = "shields"
	pinConnLim   = "conn_limits"
	pinConnCount = "conn_counts"
	pinXDP       = "uplink-xdp" // the uplink's XDP link (beside links/, which holds TCX links only)
)

func (d *Dataplane) linkPin(iface string) string {
	return filepath.Join(d.PinDir, pinLinks, iface)
}

// loadAdopting loads the first generation of this process, reusing the flow-state maps a
// previous process pinned, if any.
func (d *Dataplane) loadAdopting() (*Objects, error) {
	if err := os.MkdirAll(filepath.Join(d.PinDir, pinLinks), 0o700); err != nil {
		return nil, err
	}
	ct, err := ebpf.LoadPinnedMap(filepath.Join(d.PinDir, pinConntrack), nil)
	if errors.Is(err, os.ErrNotExist) {
		return load(nil, d.genOptions())
	}
	if err != nil {
		return nil, fmt.Errorf("adopt pinned conntrack: %w", err)
	}
	defer ct.Close()
	rn, err := ebpf.LoadPinnedMap(filepath.Join(d.PinDir, pinRevnat), nil)
	if err != nil {
		return nil, fmt.Errorf("adopt pinned reverse NAT: %w", err)
	}
	defer rn.Close()
	c := carried{conntrack: ct, revnat: rn}
	// The programs left in force write their flow events here until the new ones take over.
	if fe, err := ebpf.LoadPinnedMap(filepath.Join(d.PinDir, pinFlows), nil); err == nil {
		defer fe.Close()
		c.flowEvents = fe
	}
	// The blocks and SYN limits in force stay in force: the threat engine's next SetBlocked and
	// SetSynLimits write the difference.
	for name, dst := range map[string]**ebpf.Map{pinBlocklist: &c.blocklist, pinSynLimits: &c.synLimits, pinSynBucket: &c.synBuckets,
		pinQuar: &c.quarantine, pinQuarAllow: &c.quarantineAllow, pinShields: &c.shields, pinConnLim: &c.connLimits, pinConnCount: &c.connCounts} {
		if m, err := ebpf.LoadPinnedMap(filepath.Join(d.PinDir, name), nil); err == nil {
			defer m.Close()
			*dst = m
		}
	}
	o, err := loadWith(c, d.genOptions())
	if err != nil {
		// Maps of an incompatible (older) layout: start afresh rather than not at all.
		os.Remove(filepath.Join(d.PinDir, pinConntrack))
		os.Remove(filepath.Join(d.PinDir, pinRevnat))
		os.Remove(filepath.Join(d.PinDir, pinFlows))
		for _, name := range []string{pinBlocklist, pinSynLimits, pinSynBucket, pinQuar, pinQuarAllow, pinShields, pinConnLim, pinConnCount} {
			os.Remove(filepath.Join(d.PinDir, name))
		}
		return load(nil, d.genOptions())
	}
	return o, nil
}

// pinFlowState pins the generation's conntrack, reverse-NAT, flow-event, blocklist, SYN limit,
// quarantine and shield maps, unless they already are (later generations share the first one's maps).
func (o *Objects) pinFlowState(dir string) error {
	for name, m := range map[string]*ebpf.Map{pinConntrack: o.objs.Conntrack, pinRevnat: o.objs.Revnat, pinFlows: o.objs.FlowEvents,
		pinBlocklist: o.objs.Blocklist, pinSynLimits: o.objs.SynLimits, pinSynBucket: o.objs.SynBuckets,
		pinQuar: o.objs.Quarantine, pinQuarAllow: o.objs.QuarantineAllow, pinShields: o.objs.Shields,
		pinConnLim: o.objs.ConnLimits, pinConnCount: o.objs.ConnCounts} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := m.Pin(p); err != nil {
			return fmt.Errorf("pin %s: %w", name, err)
		}
	}
	return nil
}

// adoptLink returns the pinned attachment of an interface a previous process left, if any.
func (d *Dataplane) adoptLink(iface string) attachment {
	if d.PinDir == "" {
		return nil
	}
	a, err := loadPinnedTCX(d.linkPin(iface))
	if err != nil {
		return nil
	}
	return a
}

// dropStalePins detaches pinned links of interfaces no longer wanted (pods that left while no
// process was running).
func (d *Dataplane) dropStalePins(want map[string]int) error {
	if d.PinDir == "" {
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(d.PinDir, pinLinks))
	if err != nil {
		return nil
	}
	var errs []error
	seen := map[string]bool{}
	for _, e := range entries {
		iface := strings.TrimSuffix(strings.TrimSuffix(e.Name(), "-in"), "-out")
		if iface == uplinkPin && want != nil && d.node.Uplink != "" {
			continue // kept by syncHost
		}
		if _, ok := want[iface]; ok || seen[iface] {
			continue
		}
		seen[iface] = true
		if a, err := loadPinnedTCX(d.linkPin(iface)); err == nil {
			errs = append(errs, a.Detach())
		} else {
			os.Remove(d.linkPin(iface) + "-in")
			os.Remove(d.linkPin(iface) + "-out")
		}
	}
	return errors.Join(errs...)
}

// Remove detaches every program, releases the maps and deletes the pins.
func (d *Dataplane) Remove() error {
	d.mu.Lock()
	err := d.shutdown(true)
	d.mu.Unlock()
	if d.PinDir != "" {
		err = errors.Join(err, d.dropStalePins(nil), os.RemoveAll(d.PinDir))
	}
	return err
}

// Release lets go of the programs and maps while leaving enforcement in force: the pinned links
// keep the last generation attached until a new Dataplane on the same PinDir adopts them. It
// needs PinDir: unpinned links end with their file descriptors.
func (d *Dataplane) Release() error {
	if d.PinDir == "" {
		return errors.New("release: no PinDir, so enforcement would end with this process")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shutdown(false)
}
