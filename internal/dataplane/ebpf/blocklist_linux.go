package ebpf

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/rampart-sec/rampart/internal/dataplane"
)

// SetBlocked replaces the blocklist: packets from or to these prefixes are dropped by every
// program before conntrack and policy, and by XDP on the uplink (dataplane.Blocker). Only the
// difference to what the map holds is written; when a write fails, what was written is undone,
// so the previous set stays in force. Before the first Sync the set is kept and written then.
// IPv6 prefixes are ignored: the programs judge IPv4.
func (d *Dataplane) SetBlocked(prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]bool, len(prefixes))
	for _, p := range prefixes {
		if p, ok := dataplane.IPv4Prefix(p); ok {
			want[p] = true
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.blockWant, d.blockSynced = want, false
	if d.objs == nil {
		return nil
	}
	return d.writeBlocklistLocked(d.objs.objs.Blocklist)
}

// writeBlocklistLocked makes m hold d.blockWant. d.blockHave is what m holds (nil: unknown, read
// from the map: a new process adopting a pinned blocklist). The caller holds d.mu.
func (d *Dataplane) writeBlocklistLocked(m *ebpf.Map) error {
	if d.blockWant == nil || d.blockSynced {
		return nil // no set given yet (an adopted blocklist stays until one is), or written
	}
	if d.blockHave == nil {
		have, err := blocklistKeys(m)
		if err != nil {
			return err
		}
		d.blockHave = have
	}
	var add, del []netip.Prefix
	for p := range d.blockWant {
		if !d.blockHave[p] {
			add = append(add, p)
		}
	}
	for p := range d.blockHave {
		if !d.blockWant[p] {
			del = append(del, p)
		}
	}
	if err := putBlocks(m, add); err != nil {
		deleteBlocks(m, add)
		return fmt.Errorf("blocklist: %w", err)
	}
	if err := deleteBlocks(m, del); err != nil {
		_ = putBlocks(m, del)
		deleteBlocks(m, add)
		return fmt.Errorf("blocklist: %w", err)
	}
	// blockWant is never changed once set (SetBlocked replaces it): the map holds it now.
	d.blockHave, d.blockSynced = d.blockWant, true
	return nil
}

func blockKey(p netip.Prefix) policyBlockKey {
	return policyBlockKey{Prefixlen: uint32(p.Bits()), Addr: ipv4Key(p.Addr())}
}

func prefixOfBlockKey(k policyBlockKey) netip.Prefix {
	return netip.PrefixFrom(addrOf(k.Addr), int(k.Prefixlen))
}

// putBlocks adds prefixes with zero counts (an entry already there keeps its counts).
func putBlocks(m *ebpf.Map, ps []netip.Prefix) error {
	keys := make([]policyBlockKey, len(ps))
	for i, p := range ps {
		keys[i] = blockKey(p)
	}
	return putAll(m, keys, make([]policyBlockValue, len(ps)))
}

// deleteBlocks removes prefixes; one that is not there is no error.
func deleteBlocks(m *ebpf.Map, ps []netip.Prefix) error {
	var errs []error
	for _, p := range ps {
		if err := m.Delete(blockKey(p)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func blocklistKeys(m *ebpf.Map) (map[netip.Prefix]bool, error) {
	out := map[netip.Prefix]bool{}
	var k policyBlockKey
	var v policyBlockValue
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[prefixOfBlockKey(k)] = true
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read blocklist: %w", err)
	}
	return out, nil
}

// BlockCount is what one blocklist entry dropped.
type BlockCount struct {
	Prefix         netip.Prefix
	Packets, Bytes uint64
}

// BlockCounts reads every blocklist entry's drop counts, sorted by prefix.
func (d *Dataplane) BlockCounts() ([]BlockCount, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, errors.New("not synced")
	}
	var out []BlockCount
	var k policyBlockKey
	var v policyBlockValue
	it := d.objs.objs.Blocklist.Iterate()
	for it.Next(&k, &v) {
		out = append(out, BlockCount{Prefix: prefixOfBlockKey(k), Packets: v.Packets, Bytes: v.Bytes})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read blocklist: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Prefix.Addr().Compare(out[j].Prefix.Addr()); c != 0 {
			return c < 0
		}
		return out[i].Prefix.Bits() < out[j].Prefix.Bits()
	})
	return out, nil
}

// attachXDP points the uplink's XDP link at this generation's xdp_uplink: created (or adopted
// from the pin a previous process left) at the first Sync, updated in one operation after.
// Runs in the node's namespace.
func (d *Dataplane) attachXDP(ifindex int, o *Objects) error {
	if d.xdp != nil {
		return d.xdp.Update(o.objs.XdpUplink)
	}
	pin := filepath.Join(d.PinDir, pinXDP)
	if d.PinDir != "" {
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := l.Update(o.objs.XdpUplink); err == nil {
				d.xdp = l
				return nil
			}
			l.Unpin()
			l.Close()
		}
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: o.objs.XdpUplink, Interface: ifindex})
	if err != nil {
		return fmt.Errorf("attach XDP to uplink %s: %w", d.node.Uplink, err)
	}
	d.xdp = l
	if d.PinDir != "" {
		if err := l.Pin(pin); err != nil {
			return fmt.Errorf("pin XDP link: %w", err)
		}
	}
	return nil
}

// removeXDP detaches the uplink's XDP program (detach), or only lets go of the process's handle
// (a pinned link stays in force).
func (d *Dataplane) removeXDP(detach bool) error {
	if d.xdp == nil {
		return nil
	}
	var err error
	if detach {
		err = errors.Join(d.xdp.Unpin(), d.xdp.Close())
	} else {
		err = d.xdp.Close()
	}
	d.xdp = nil
	return err
}
