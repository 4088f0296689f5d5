package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/rampart-sec/rampart/internal/ir"
)

// The blocklist (dataplane.Blocker): a hash:net set of blocked prefixes and a chain in the raw
// table, jumped to first from PREROUTING, that drops every packet from or to a member before
// conntrack and before the filter table's policy. A sample of the drops (at most
// blockSampleRate a second per rule) is logged to the flow group with a prefix of its own.
const (
	BlockSet       = SetPrefix + "blocklist"
	blockChain     = ChainPrefix + "BLOCK"
	blockDropChain = ChainPrefix + "BLOCK-DROP"
	// blockSampleRate bounds the flow events of blocked packets, so a flood from a blocked
	// source cannot crowd the flow records out of the NFLOG group.
	blockSampleRate = "20/sec --limit-burst 40"
)

// blockPrefix is the NFLOG prefix of a blocked packet: "D", the direction, "!".
func blockPrefix(dir ir.Direction) string { return verdictDir(false, dir) + "!" }

// decodeBlockPrefix reports whether prefix is a blocked packet's, and its direction.
func decodeBlockPrefix(prefix string) (ir.Direction, bool) {
	for _, dir := range []ir.Direction{ir.Ingress, ir.Egress} {
		if prefix == blockPrefix(dir) {
			return dir, true
		}
	}
	return 0, false
}

// renderBlockChains renders the raw table's chains. Packets coming in on a pod's interface are
// the pod's egress; everything else is ingress (as the eBPF programs report them).
func renderBlockChains(podPrefix string, group uint16) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*raw\n:%s - [0:0]\n:%s - [0:0]\n", blockChain, blockDropChain)
	for _, dir := range []string{"src", "dst"} {
		fmt.Fprintf(&b, "-A %s -m set --match-set %s %s -j %s\n", blockChain, BlockSet, dir, blockDropChain)
	}
	if group != 0 {
		log := func(match string, dir ir.Direction) {
			fmt.Fprintf(&b, "-A %s %s-m limit --limit %s -j NFLOG --nflog-group %d --nflog-prefix %q --nflog-size 128\n",
				blockDropChain, match, blockSampleRate, group, blockPrefix(dir))
		}
		if podPrefix != "" {
			log(fmt.Sprintf("-i %s+ ", podPrefix), ir.Egress)
			log(fmt.Sprintf("! -i %s+ ", podPrefix), ir.Ingress)
		} else {
			log("", ir.Ingress)
		}
	}
	fmt.Fprintf(&b, "-A %s -j DROP\nCOMMIT\n", blockDropChain)
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
		if _, err := d.run.Run(ctx, renderBlockChains(d.node.PodInterfacePrefix, d.node.FlowLogGroup), "iptables-restore", "--noflush"); err != nil {
			d.destroyStaged(ctx, []string{BlockSet})
			return fmt.Errorf("install blocklist rules: %w", err)
		}
		if err := d.ensureJumps(ctx, &Spec{Jumps: []Jump{{Table: "raw", From: "PREROUTING", To: blockChain}}}); err != nil {
			d.destroyStaged(ctx, []string{BlockSet})
			return err
		}
		d.blockInstalled = true
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
