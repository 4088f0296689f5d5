package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// Pinned objects under PinDir: links/<interface>-in|-out, uplink-xdp, and the flow-state
// maps (pinnedMaps) by their names.
const (
	pinLinks = "links"
	pinXDP   = "uplink-xdp" // the uplink's XDP link (beside links/, which holds TCX links only)
)

func (d *Dataplane) linkPin(iface string) string {
	return filepath.Join(d.PinDir, pinLinks, iface)
}

// loadAdopting loads the first generation of this process, reusing the flow-state maps a
// previous process pinned (pinFlowState), if any.
func (d *Dataplane) loadAdopting() (*Objects, error) {
	if err := os.MkdirAll(filepath.Join(d.PinDir, pinLinks), 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(d.PinDir, "conntrack")); errors.Is(err, os.ErrNotExist) {
		return load(nil, d.genOptions())
	}
	c := carried{}
	for _, name := range pinnedMaps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(d.PinDir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue // pinned by a version that did not carry it: created afresh
		}
		if err != nil {
			return nil, fmt.Errorf("adopt pinned %s: %w", name, err) // the deferred Closes release those adopted
		}
		defer m.Close()
		c[name] = m
	}
	o, err := loadWith(c, d.genOptions())
	if err != nil {
		// Maps of an incompatible (older) layout: start afresh rather than not at all.
		for _, name := range pinnedMaps {
			os.Remove(filepath.Join(d.PinDir, name))
		}
		return load(nil, d.genOptions())
	}
	return o, nil
}

// pinnedMaps are the maps a restarted agent adopts: the carried ones (the programs left in
// force keep writing flow events, and the blocks, SYN limits and quarantines in force stay until
// the threat engine's next writes) but the counters, which start again with the process.
var pinnedMaps = slices.DeleteFunc(slices.Clone(carriedMaps), func(n string) bool { return n == "counters" })

// pinFlowState pins the generation's pinnedMaps, unless they already are (later generations
// share the first one's maps).
func (o *Objects) pinFlowState(dir string) error {
	for _, name := range pinnedMaps {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := o.mapNamed(name).Pin(p); err != nil {
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
