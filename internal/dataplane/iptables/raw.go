package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

// The threat engine's responses in the raw table, before conntrack and before the filter
// table's policy, from one chain jumped to first from PREROUTING (and the connection-limit
// shield's caps, which need conntrack, in the mangle table's PREROUTING):
//   - the blocklist (dataplane.Blocker): a hash:net set of blocked prefixes; every packet from
//     or to a member is dropped;
//   - quarantine (dataplane.Quarantiner): a hash:ip set of quarantined pods; every packet from
//     or to one is dropped, but those to an allowed port and their replies;
//   - the MSS shield (dataplane.Shielder): a hash:ip set of shielded pods; TCP SYNs toward one
//     with an MSS option below the minimum are dropped (tcpmss);
//   - SYN limits (dataplane.SynLimiter): per limited pod, a hashlimit rule that drops a
//     source's TCP SYNs above its rate.
//
// A sample of each kind of drop (at most sampleRate a second per rule) is logged to the flow
// group with a prefix of its own.
const (
	BlockSet        = SetPrefix + "blocklist"
	QuarantineSet   = SetPrefix + "quarantine"
	ShieldSet       = SetPrefix + "shield"
	blockChain      = ChainPrefix + "BLOCK"
	blockDropChain  = ChainPrefix + "BLOCK-DROP"
	quarOutChain    = ChainPrefix + "QUAR-OUT"
	quarInChain     = ChainPrefix + "QUAR-IN"
	quarDropChain   = ChainPrefix + "QUAR-DROP"
	shieldDropChain = ChainPrefix + "SHIELD-DROP"
	synChain        = ChainPrefix + "SYNLIMIT"
	synDropChain    = ChainPrefix + "SYNLIMIT-DROP"
	// The connection-limit shield's caps need conntrack, so they live in the mangle table's
	// PREROUTING, right after conntrack and before routing and policy.
	connChain     = ChainPrefix + "CONNLIMIT"
	connDropChain = ChainPrefix + "CONNLIMIT-DROP"
	// sampleRate bounds the flow events of dropped packets, so a flood cannot crowd the flow
	// records out of the NFLOG group.
	sampleRate = "20/sec --limit-burst 40"
)

// rawSets are the sets the raw chains name, with their types: Apply leaves them alone.
var rawSets = map[string]string{BlockSet: "hash:net", QuarantineSet: "hash:ip", ShieldSet: "hash:ip"}

// dropMarks end the prefixes of sampled drops, after "D" and the direction.
var dropMarks = map[flow.DropKind]string{flow.DropBlocklist: "!", flow.DropSynLimit: "~", flow.DropQuarantine: "^", flow.DropShield: "%", flow.DropConnLimit: "#"}

// dropPrefix is the NFLOG prefix of a drop of kind in direction dir.
func dropPrefix(kind flow.DropKind, dir ir.Direction) string {
	return verdictDir(false, dir) + dropMarks[kind]
}

// decodeDropPrefix reports whether prefix is a sampled drop's: its kind ("" when not) and
// direction.
func decodeDropPrefix(prefix string) (ir.Direction, flow.DropKind) {
	for _, dir := range []ir.Direction{ir.Ingress, ir.Egress} {
		for kind := range dropMarks {
			if prefix == dropPrefix(kind, dir) {
				return dir, kind
			}
		}
	}
	return 0, ""
}

// rawState is what the raw chains enforce beyond the sets' members.
type rawState struct {
	limits []dataplane.SynLimit     // sorted by target
	allow  []dataplane.PortProtocol // what quarantined pods may reach
	minMSS uint16                   // TCP SYNs toward ShieldSet's pods with a smaller MSS are dropped (0: off)
	conns  []dataplane.ConnLimit    // caps on each source's open connections, sorted by target
}

// dropChains are the raw table's drop chains, one per kind, each logging a sample first.
var dropChains = []struct {
	kind  flow.DropKind
	chain string
}{{flow.DropBlocklist, blockDropChain}, {flow.DropQuarantine, quarDropChain}, {flow.DropShield, shieldDropChain}, {flow.DropSynLimit, synDropChain}}

// renderRaw renders the raw table's chains. Packets coming in on a pod's interface are the
// pod's egress; everything else is ingress (as the eBPF programs report them).
func renderRaw(podPrefix string, group uint16, st rawState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*raw\n")
	for _, c := range []string{blockChain, quarOutChain, quarInChain, synChain} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, d := range dropChains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", d.chain)
	}
	for _, dir := range []string{"src", "dst"} {
		fmt.Fprintf(&b, "-A %s -m set --match-set %s %s -j %s\n", blockChain, BlockSet, dir, blockDropChain)
	}
	fmt.Fprintf(&b, "-A %s -m set --match-set %s src -j %s\n", blockChain, QuarantineSet, quarOutChain)
	fmt.Fprintf(&b, "-A %s -m set --match-set %s dst -j %s\n", blockChain, QuarantineSet, quarInChain)
	for _, a := range st.allow {
		proto := strings.ToLower(a.Protocol.String())
		fmt.Fprintf(&b, "-A %s -p %s -m %s --dport %d -j RETURN\n", quarOutChain, proto, proto, a.Port)
		fmt.Fprintf(&b, "-A %s -p %s -m %s --sport %d -j RETURN\n", quarInChain, proto, proto, a.Port)
	}
	fmt.Fprintf(&b, "-A %s -j %s\n-A %s -j %s\n", quarOutChain, quarDropChain, quarInChain, quarDropChain)
	if st.minMSS > 0 {
		fmt.Fprintf(&b, "-A %s -p tcp -m tcp --tcp-flags SYN SYN -m set --match-set %s dst -m tcpmss --mss 0:%d -j %s\n",
			blockChain, ShieldSet, st.minMSS-1, shieldDropChain)
	}
	if len(st.limits) > 0 {
		fmt.Fprintf(&b, "-A %s -p tcp --syn -j %s\n", blockChain, synChain)
	}
	for _, l := range st.limits {
		if !l.Target.Unmap().Is4() {
			continue
		}
		t := l.Target.Unmap().String()
		rate, burst := max(l.Rate, 1), max(l.Burst, 1)
		// hashlimit names its table (at most 15 bytes here): one per target and limit. A rule
		// naming a table that exists shares it, with the rate it was made with, so a changed
		// limit needs a new name.
		fmt.Fprintf(&b, "-A %s -d %s/32 -m hashlimit --hashlimit-above %d/sec --hashlimit-burst %d --hashlimit-mode srcip --hashlimit-name rl%s -j %s\n",
			synChain, t, rate, burst, strings.ToLower(hash(fmt.Sprintf("%s/%d/%d", t, rate, burst)))[:10], synDropChain)
	}
	for _, d := range dropChains {
		if group != 0 {
			log := func(match string, dir ir.Direction) {
				fmt.Fprintf(&b, "-A %s %s-m limit --limit %s -j NFLOG --nflog-group %d --nflog-prefix %q --nflog-size 128\n",
					d.chain, match, sampleRate, group, dropPrefix(d.kind, dir))
			}
			if podPrefix != "" {
				log(fmt.Sprintf("-i %s+ ", podPrefix), ir.Egress)
				log(fmt.Sprintf("! -i %s+ ", podPrefix), ir.Ingress)
			} else {
				log("", ir.Ingress)
			}
		}
		fmt.Fprintf(&b, "-A %s -j DROP\n", d.chain)
	}
	b.WriteString("COMMIT\n")
	// connlimit counts each source's connections in conntrack that passed the rule: a SYN
	// that would open one more than Max is dropped (its entry is never confirmed, so it does
	// not count).
	fmt.Fprintf(&b, "*mangle\n:%s - [0:0]\n:%s - [0:0]\n", connChain, connDropChain)
	for _, c := range st.conns {
		if t := c.Target.Unmap(); t.Is4() && c.Max > 0 {
			fmt.Fprintf(&b, "-A %s -d %s/32 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above %d --connlimit-mask 32 --connlimit-saddr -j %s\n",
				connChain, t, c.Max, connDropChain)
		}
	}
	if group != 0 {
		fmt.Fprintf(&b, "-A %s -m limit --limit %s -j NFLOG --nflog-group %d --nflog-prefix %q --nflog-size 128\n",
			connDropChain, sampleRate, group, dropPrefix(flow.DropConnLimit, ir.Ingress))
	}
	fmt.Fprintf(&b, "-A %s -j DROP\nCOMMIT\n", connDropChain)
	return b.String()
}

// setScript renders the ipset restore input that fills set name (of type typ) with members.
func setScript(name, typ string, members []string) string {
	sort.Strings(members)
	var b strings.Builder
	fmt.Fprintf(&b, "create %s %s family inet maxelem %d -exist\nflush %s\n", name, typ, maxElem(len(members)), name)
	for _, m := range members {
		fmt.Fprintf(&b, "add %s %s -exist\n", name, m)
	}
	return b.String()
}

// ipv4Prefixes renders the IPv4 prefixes (4-in-6 ones as IPv4) as set members: the rules judge
// IPv4.
func ipv4Prefixes(prefixes []netip.Prefix) []string {
	var out []string
	for _, p := range prefixes {
		if p, ok := dataplane.IPv4Prefix(p); ok {
			out = append(out, p.String())
		}
	}
	return out
}

// SetBlocked replaces the blocked prefixes (dataplane.Blocker).
func (d *Dataplane) SetBlocked(prefixes []netip.Prefix) error {
	members := ipv4Prefixes(prefixes)
	return d.changeRaw(len(members) == 0, func(ctx context.Context) error {
		return d.replaceSetLocked(ctx, BlockSet, members)
	})
}

// changeRaw runs fn with d.applyMu held, once the raw table's sets, chains and jump are in
// place. A change to nothing where rampart never installed them is nothing to do: a node
// without threat responses keeps no raw-table rules for every packet to walk.
func (d *Dataplane) changeRaw(empty bool, fn func(ctx context.Context) error) error {
	ctx := context.Background()
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	if empty && !d.rawInstalled {
		sets, err := d.listSets(ctx)
		if err != nil {
			return err
		}
		installed := false
		for name := range rawSets {
			installed = installed || sets[name]
		}
		if !installed {
			return nil
		}
	}
	if err := d.ensureRawLocked(ctx); err != nil {
		return err
	}
	return fn(ctx)
}

// SetQuarantine replaces the quarantine (dataplane.Quarantiner): the allowed ports first (the
// chains, in one transaction), then the pods (the set, swapped in at once).
func (d *Dataplane) SetQuarantine(q dataplane.Quarantine) error {
	members := addrMembers(q.Pods)
	return d.changeRaw(len(members) == 0, func(ctx context.Context) error {
		st := d.raw
		st.allow = slices.Clone(q.Allow)
		if !slices.Equal(st.allow, d.raw.allow) {
			if err := d.writeRawLocked(ctx, st); err != nil {
				return err
			}
		}
		return d.replaceSetLocked(ctx, QuarantineSet, members)
	})
}

// SetMSSShield replaces the MSS shield (dataplane.Shielder): the minimum first (the chains, in
// one transaction), then the pods (the set, swapped in at once).
func (d *Dataplane) SetMSSShield(sh dataplane.MSSShield) error {
	members := addrMembers(sh.Pods)
	return d.changeRaw(len(members) == 0 || sh.Min == 0, func(ctx context.Context) error {
		if st := d.raw; st.minMSS != sh.Min {
			st.minMSS = sh.Min
			if err := d.writeRawLocked(ctx, st); err != nil {
				return err
			}
		}
		return d.replaceSetLocked(ctx, ShieldSet, members)
	})
}

// SetConnLimits replaces the caps on each source's open connections (dataplane.ConnLimiter),
// in one iptables-restore, so a failure leaves the previous ones.
func (d *Dataplane) SetConnLimits(limits []dataplane.ConnLimit) error {
	return d.changeRaw(len(limits) == 0, func(ctx context.Context) error {
		st := d.raw
		st.conns = slices.Clone(limits)
		sort.Slice(st.conns, func(i, j int) bool { return st.conns[i].Target.Less(st.conns[j].Target) })
		if slices.Equal(st.conns, d.raw.conns) {
			return nil
		}
		return d.writeRawLocked(ctx, st)
	})
}

// addrMembers renders IPv4 addresses as set members.
func addrMembers(addrs []netip.Addr) []string {
	var out []string
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			out = append(out, a.String())
		}
	}
	return out
}

// SetSynLimits replaces the SYN rate limits (dataplane.SynLimiter): the raw table's chains are
// rewritten in one iptables-restore transaction, so a failure leaves the previous ones.
func (d *Dataplane) SetSynLimits(limits []dataplane.SynLimit) error {
	return d.changeRaw(len(limits) == 0, func(ctx context.Context) error {
		st := d.raw
		st.limits = slices.Clone(limits)
		sort.Slice(st.limits, func(i, j int) bool { return st.limits[i].Target.Less(st.limits[j].Target) })
		return d.writeRawLocked(ctx, st)
	})
}

// replaceSetLocked stages members in a set of their own and swaps it in at once, so a failure
// leaves the previous members in force. The caller holds d.applyMu.
func (d *Dataplane) replaceSetLocked(ctx context.Context, name string, members []string) error {
	staged := name + "-n"
	if _, err := d.run.Run(ctx, setScript(staged, rawSets[name], members), "ipset", "restore"); err != nil {
		d.destroyStaged(ctx, []string{name})
		return fmt.Errorf("stage %s: %w", name, err)
	}
	if err := d.swap(ctx, []string{name}); err != nil {
		d.destroyStaged(ctx, []string{name})
		return fmt.Errorf("swap %s: %w", name, err)
	}
	d.destroyStaged(ctx, []string{name}) // now the previous members
	return nil
}

// ensureRawLocked installs the raw table's sets (empty, or as a previous process left them),
// chains and jump, once. The caller holds d.applyMu.
func (d *Dataplane) ensureRawLocked(ctx context.Context) error {
	if d.rawInstalled {
		return nil
	}
	var b strings.Builder
	for name, typ := range rawSets {
		fmt.Fprintf(&b, "create %s %s family inet maxelem 65536 -exist\n", name, typ)
	}
	if _, err := d.run.Run(ctx, b.String(), "ipset", "restore"); err != nil {
		return fmt.Errorf("create raw table sets: %w", err)
	}
	return d.writeRawLocked(ctx, d.raw)
}

// writeRawLocked rewrites the raw table's chains for st and hooks them in (once). The caller
// holds d.applyMu.
func (d *Dataplane) writeRawLocked(ctx context.Context, st rawState) error {
	if _, err := d.run.Run(ctx, renderRaw(d.node.PodInterfacePrefix, d.node.FlowLogGroup, st), "iptables-restore", "--noflush"); err != nil {
		return fmt.Errorf("write raw table rules: %w", err)
	}
	if !d.rawInstalled {
		if err := d.ensureJumps(ctx, &Spec{Jumps: []Jump{{Table: "raw", From: "PREROUTING", To: blockChain}, {Table: "mangle", From: "PREROUTING", To: connChain}}}); err != nil {
			return err
		}
		d.rawInstalled = true
	}
	d.raw = st
	return nil
}
