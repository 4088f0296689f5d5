package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
)

// The threat engine's responses in the raw table, before conntrack and before the filter
// table's policy, from one chain jumped to first from PREROUTING:
//   - the blocklist (dataplane.Blocker): a hash:net set of blocked prefixes; every packet from
//     or to a member is dropped;
//   - SYN limits (dataplane.SynLimiter): per limited pod, a hashlimit rule that drops a
//     source's TCP SYNs above its rate.
//
// A sample of each kind of drop (at most sampleRate a second per rule) is logged to the flow
// group with a prefix of its own.
const (
	BlockSet       = SetPrefix + "blocklist"
	blockChain     = ChainPrefix + "BLOCK"
	blockDropChain = ChainPrefix + "BLOCK-DROP"
	synChain       = ChainPrefix + "SYNLIMIT"
	synDropChain   = ChainPrefix + "SYNLIMIT-DROP"
	// sampleRate bounds the flow events of dropped packets, so a flood cannot crowd the flow
	// records out of the NFLOG group.
	sampleRate = "20/sec --limit-burst 40"
)

// Prefixes of the sampled drops: "D", the direction, then "!" (blocklist) or "~" (SYN limit).
func blockPrefix(dir ir.Direction) string { return verdictDir(false, dir) + "!" }
func limitPrefix(dir ir.Direction) string { return verdictDir(false, dir) + "~" }

// decodeDropPrefix reports whether prefix is a sampled drop's, which kind and its direction.
func decodeDropPrefix(prefix string) (dir ir.Direction, blocked, limited bool) {
	for _, dir := range []ir.Direction{ir.Ingress, ir.Egress} {
		switch prefix {
		case blockPrefix(dir):
			return dir, true, false
		case limitPrefix(dir):
			return dir, false, true
		}
	}
	return 0, false, false
}

// renderRaw renders the raw table's chains for the SYN limits in force. Packets coming in on a
// pod's interface are the pod's egress; everything else is ingress (as the eBPF programs
// report them).
func renderRaw(podPrefix string, group uint16, limits []dataplane.SynLimit) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*raw\n")
	for _, c := range []string{blockChain, blockDropChain, synChain, synDropChain} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, dir := range []string{"src", "dst"} {
		fmt.Fprintf(&b, "-A %s -m set --match-set %s %s -j %s\n", blockChain, BlockSet, dir, blockDropChain)
	}
	if len(limits) > 0 {
		fmt.Fprintf(&b, "-A %s -p tcp --syn -j %s\n", blockChain, synChain)
	}
	for _, l := range limits {
		if !l.Target.Unmap().Is4() {
			continue
		}
		t := l.Target.Unmap().String()
		// hashlimit names its table (at most 15 bytes here): one per target.
		fmt.Fprintf(&b, "-A %s -d %s/32 -m hashlimit --hashlimit-above %d/sec --hashlimit-burst %d --hashlimit-mode srcip --hashlimit-name rl%s -j %s\n",
			synChain, t, max(l.Rate, 1), max(l.Burst, 1), strings.ToLower(hash(t))[:10], synDropChain)
	}
	for _, c := range []struct {
		chain  string
		prefix func(ir.Direction) string
	}{{blockDropChain, blockPrefix}, {synDropChain, limitPrefix}} {
		if group != 0 {
			log := func(match string, dir ir.Direction) {
				fmt.Fprintf(&b, "-A %s %s-m limit --limit %s -j NFLOG --nflog-group %d --nflog-prefix %q --nflog-size 128\n",
					c.chain, match, sampleRate, group, c.prefix(dir))
			}
			if podPrefix != "" {
				log(fmt.Sprintf("-i %s+ ", podPrefix), ir.Egress)
				log(fmt.Sprintf("! -i %s+ ", podPrefix), ir.Ingress)
			} else {
				log("", ir.Ingress)
			}
		}
		fmt.Fprintf(&b, "-A %s -j DROP\n", c.chain)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// blockSetScript renders the ipset restore input that fills set name with prefixes (IPv4 only,
// as the rules judge IPv4).
func blockSetScript(name string, prefixes []netip.Prefix) string {
	var members []string
	for _, p := range prefixes {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.IsValid() && p.Addr().Is4() {
			members = append(members, p.Masked().String())
		}
	}
	sort.Strings(members)
	maxelem := 65536
	for maxelem < len(members) {
		maxelem *= 2
	}
	var b strings.Builder
	fmt.Fprintf(&b, "create %s hash:net family inet maxelem %d -exist\nflush %s\n", name, maxelem, name)
	for _, m := range members {
		fmt.Fprintf(&b, "add %s %s -exist\n", name, m)
	}
	return b.String()
}

// SetBlocked replaces the blocked prefixes (dataplane.Blocker): the new members are staged in
// a set of their own and swapped in at once, so a failure leaves the previous set in force.
// The first call installs the raw table's chains and the jump to them.
func (d *Dataplane) SetBlocked(prefixes []netip.Prefix) error {
	ctx := context.Background()
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	staged := BlockSet + "-n"
	if _, err := d.run.Run(ctx, blockSetScript(staged, prefixes), "ipset", "restore"); err != nil {
		d.destroyStaged(ctx, []string{BlockSet})
		return fmt.Errorf("stage blocklist: %w", err)
	}
	if !d.blockInstalled {
		// The set must exist before rules name it: the staged one becomes it when it does not.
		sets, err := d.listSets(ctx)
		if err != nil {
			d.destroyStaged(ctx, []string{BlockSet})
			return err
		}
		if !sets[BlockSet] {
			if _, err := d.run.Run(ctx, "", "ipset", "rename", staged, BlockSet); err != nil {
				d.destroyStaged(ctx, []string{BlockSet})
				return fmt.Errorf("install blocklist: %w", err)
			}
		}
		if err := d.writeRawLocked(ctx, d.synLimits); err != nil {
			d.destroyStaged(ctx, []string{BlockSet})
			return err
		}
		if !sets[BlockSet] {
			return nil
		}
	}
	if err := d.swap(ctx, []string{BlockSet}); err != nil {
		d.destroyStaged(ctx, []string{BlockSet})
		return fmt.Errorf("swap blocklist: %w", err)
	}
	d.destroyStaged(ctx, []string{BlockSet}) // now the previous members
	return nil
}

// SetSynLimits replaces the SYN rate limits (dataplane.SynLimiter): the raw table's chains are
// rewritten in one iptables-restore transaction, so a failure leaves the previous ones.
func (d *Dataplane) SetSynLimits(limits []dataplane.SynLimit) error {
	ctx := context.Background()
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	limits = slices.Clone(limits)
	sort.Slice(limits, func(i, j int) bool { return limits[i].Target.Less(limits[j].Target) })
	if !d.blockInstalled {
		// The chains name the blocklist: it must exist, empty until SetBlocked fills it.
		if _, err := d.run.Run(ctx, "", "ipset", "create", BlockSet, "hash:net", "family", "inet", "maxelem", "65536", "-exist"); err != nil {
			return fmt.Errorf("create blocklist: %w", err)
		}
	}
	if err := d.writeRawLocked(ctx, limits); err != nil {
		return err
	}
	d.synLimits = limits
	return nil
}

// writeRawLocked rewrites the raw table's chains for limits and hooks them in (once). The
// caller holds d.applyMu.
func (d *Dataplane) writeRawLocked(ctx context.Context, limits []dataplane.SynLimit) error {
	if _, err := d.run.Run(ctx, renderRaw(d.node.PodInterfacePrefix, d.node.FlowLogGroup, limits), "iptables-restore", "--noflush"); err != nil {
		return fmt.Errorf("write raw table rules: %w", err)
	}
	if !d.blockInstalled {
		if err := d.ensureJumps(ctx, &Spec{Jumps: []Jump{{Table: "raw", From: "PREROUTING", To: blockChain}}}); err != nil {
			return err
		}
		d.blockInstalled = true
	}
	return nil
}
