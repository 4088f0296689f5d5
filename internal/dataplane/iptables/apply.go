package iptables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
)

// Dataplane enforces policy with iptables and ipset in one network namespace.
type Dataplane struct {
	node dataplane.Node
	run  Runner
	// applied is the spec last installed successfully; nil before the first Sync (or after a
	// failure whose rollback could not be confirmed), which forces a full rewrite.
	applied *Spec

	// applyMu serialises what changes the kernel's tables: Sync and SetBlocked (the blocklist
	// changes from the threat engine, whenever its feeds or blocks change).
	applyMu sync.Mutex
	// rawInstalled: the raw table's sets, chains and jump are in place (SetBlocked,
	// SetQuarantine, SetSynLimits); raw is what the chains enforce.
	rawInstalled bool
	raw          rawState

	mu sync.Mutex
	// prefixes resolve flow-event prefixes: the Ruleset in force and the one before it (events
	// logged by rules just replaced).
	prefixes [2]*prefixTable
	entries  map[string]int
}

var _ dataplane.Dataplane = (*Dataplane)(nil)

// New returns a dataplane for node that runs its commands through run.
func New(node dataplane.Node, run Runner) *Dataplane {
	return &Dataplane{node: node, run: run}
}

// Sync renders rs and applies it.
func (d *Dataplane) Sync(ctx context.Context, rs *ir.Ruleset) error {
	spec, err := Render(rs, d.node)
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	d.applyMu.Lock()
	err = d.Apply(ctx, spec)
	d.applyMu.Unlock()
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.prefixes[0], d.prefixes[1] = newPrefixTable(rs, spec.Frontends, d.prefixes[0]), d.prefixes[0]
	d.entries = spec.Entries()
	d.mu.Unlock()
	return nil
}

// Entries reports what the last Sync installed (dataplane.EntryCounter).
func (d *Dataplane) Entries() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.entries
}

// Apply installs spec atomically:
//  1. new content goes into fresh "-n" sets; sets that do not exist yet are created full;
//  2. iptables-restore --test checks the new chains against the kernel, before anything changes
//     (when the current state was not written by this applier);
//  3. changed sets are swapped with their "-n" twins (which then hold the old members);
//  4. changed chains are replaced with iptables-restore --noflush, one transaction per table,
//     and stale rampart chains are deleted in the same transaction;
//  5. on failure the sets are swapped back and the previous tables restored; on success the
//     old members and unreferenced sets are destroyed, and missing jump rules are added.
func (d *Dataplane) Apply(ctx context.Context, spec *Spec) error {
	// What exists: known from the last successful apply, read from the kernel otherwise
	// (first sync, restart, or after a failure).
	existingSets, existingChains, err := d.existing(ctx)
	if err != nil {
		return err
	}

	// 1. Stage set contents.
	var swaps []string
	var script strings.Builder
	for _, s := range spec.Sets {
		if d.applied != nil && setUnchanged(d.applied, s) && existingSets[s.Name] {
			continue
		}
		target := s.Name
		if existingSets[s.Name] {
			target = s.Name + "-n"
			swaps = append(swaps, s.Name)
		}
		fmt.Fprintf(&script, "create %s %s family %s maxelem %d -exist\nflush %s\n", target, s.Type, s.Family, maxElem(len(s.Entries)), target)
		for _, e := range s.Entries {
			fmt.Fprintf(&script, "add %s %s\n", target, e)
		}
	}
	if script.Len() > 0 {
		if _, err := d.run.Run(ctx, script.String(), "ipset", "restore"); err != nil {
			d.destroyStaged(ctx, swaps)
			return fmt.Errorf("stage ipsets: %w", err)
		}
	}

	// 2. When adopting state we did not write (first sync, restart, after a failure), check the
	// new chains before changing anything. From a known state a failed restore is rolled back
	// below, so the extra pass (a full ruleset read with the nft backend) is skipped.
	var input strings.Builder
	for _, t := range []string{"filter", "nat"} {
		input.WriteString(d.restoreInput(spec, t, existingChains[t]))
	}
	if d.applied == nil {
		if _, err := d.run.Run(ctx, input.String(), "iptables-restore", "--noflush", "--test"); err != nil {
			d.destroyStaged(ctx, swaps)
			return fmt.Errorf("check rules: %w", err)
		}
	}

	// 3. Swap in new set members.
	if err := d.swap(ctx, swaps); err != nil {
		d.destroyStaged(ctx, swaps)
		d.applied = nil
		return fmt.Errorf("swap ipsets: %w", err)
	}

	// 4. Replace chains: one transaction per table, in one restore run.
	if _, err := d.run.Run(ctx, input.String(), "iptables-restore", "--noflush"); err != nil {
		err = fmt.Errorf("apply rules: %w", err)
		return errors.Join(err, d.rollback(ctx, swaps, []string{"filter", "nat"}))
	}
	first := d.applied == nil
	d.applied = spec

	// 5. Hook in (once; the jumps are never removed while running), then clean up what
	// nothing references any more.
	if first {
		if err := d.ensureJumps(ctx, spec); err != nil {
			d.applied = nil
			return err
		}
	}
	keep := map[string]bool{}
	for _, s := range spec.Sets {
		keep[s.Name] = true
	}
	var cleanup strings.Builder
	for _, n := range swaps {
		fmt.Fprintf(&cleanup, "destroy %s-n\n", n)
	}
	for name := range existingSets {
		if _, raw := rawSets[name]; strings.HasPrefix(name, SetPrefix) && !keep[name] && !raw && !strings.HasSuffix(name, "-n") {
			fmt.Fprintf(&cleanup, "destroy %s\n", name)
		}
	}
	if cleanup.Len() > 0 {
		if _, err := d.run.Run(ctx, cleanup.String(), "ipset", "restore"); err != nil {
			return fmt.Errorf("remove unused ipsets: %w", err)
		}
	}
	return nil
}

// existing returns the rampart sets and chains in the namespace.
func (d *Dataplane) existing(ctx context.Context) (map[string]bool, map[string][]string, error) {
	if d.applied != nil {
		sets := map[string]bool{}
		for _, s := range d.applied.Sets {
			sets[s.Name] = true
		}
		chains := map[string][]string{}
		for t, cs := range d.applied.Tables {
			for _, c := range cs {
				chains[t] = append(chains[t], c.Name)
			}
		}
		return sets, chains, nil
	}
	sets, err := d.listSets(ctx)
	if err != nil {
		return nil, nil, err
	}
	chains := map[string][]string{}
	for _, t := range []string{"filter", "nat"} {
		if chains[t], err = d.listChains(ctx, t); err != nil {
			return nil, nil, err
		}
	}
	return sets, chains, nil
}

func setUnchanged(prev *Spec, s IPSet) bool {
	for _, p := range prev.Sets {
		if p.Name == s.Name {
			return p.Type == s.Type && slices.Equal(p.Entries, s.Entries)
		}
	}
	return false
}

// restoreInput renders the chains of table that differ from the last applied spec (all of
// them after a restart), plus the deletion of rampart chains the spec no longer has.
func (d *Dataplane) restoreInput(spec *Spec, table string, existing []string) string {
	want := map[string]bool{}
	for _, c := range spec.Tables[table] {
		want[c.Name] = true
	}
	var stale []string
	for _, c := range existing {
		if !want[c] {
			stale = append(stale, c)
		}
	}
	sort.Strings(stale)
	changed := &Spec{Tables: map[string][]Chain{}}
	prev := map[string][]string{}
	if d.applied != nil {
		for _, c := range d.applied.Tables[table] {
			prev[c.Name] = c.Rules
		}
	}
	have := map[string]bool{}
	for _, c := range existing {
		have[c] = true
	}
	for _, c := range spec.Tables[table] {
		if old, ok := prev[c.Name]; ok && have[c.Name] && slices.Equal(old, c.Rules) {
			continue
		}
		changed.Tables[table] = append(changed.Tables[table], c)
	}
	return changed.Restore(table, stale)
}

func (d *Dataplane) swap(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "swap %s-n %s\n", n, n)
	}
	// ipset restore stops at the first failing line; swap back whatever went through.
	if _, err := d.run.Run(ctx, b.String(), "ipset", "restore"); err != nil {
		for _, n := range names {
			_, _ = d.run.Run(ctx, "", "ipset", "swap", n+"-n", n)
		}
		return err
	}
	return nil
}

// rollback restores the previous set members and re-applies the previous chains of the
// tables that were already replaced.
func (d *Dataplane) rollback(ctx context.Context, swaps, tables []string) error {
	var errs []error
	if err := d.swap(ctx, swaps); err != nil {
		errs = append(errs, fmt.Errorf("roll back ipsets: %w", err))
	}
	if d.applied != nil {
		for _, t := range tables {
			if _, err := d.run.Run(ctx, d.applied.Restore(t, nil), "iptables-restore", "--noflush"); err != nil {
				errs = append(errs, fmt.Errorf("roll back %s rules: %w", t, err))
			}
		}
	} else {
		errs = append(errs, fmt.Errorf("no previous rules to roll back to"))
	}
	d.destroyStaged(ctx, swaps)
	if len(errs) > 0 {
		d.applied = nil
	}
	return errors.Join(errs...)
}

func (d *Dataplane) destroyStaged(ctx context.Context, names []string) {
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "destroy %s-n\n", n)
	}
	if b.Len() > 0 {
		_, _ = d.run.Run(ctx, b.String(), "ipset", "restore")
	}
}

func (d *Dataplane) ensureJumps(ctx context.Context, spec *Spec) error {
	for _, j := range spec.Jumps {
		args := strings.Fields(j.Rule())
		for i, a := range args { // the comment is quoted for restore input, not for exec
			args[i] = strings.Trim(a, `"`)
		}
		check := append([]string{"-t", j.Table, "-C", j.From}, args...)
		if _, err := d.run.Run(ctx, "", "iptables", append(check, "-w")...); err == nil {
			continue
		}
		insert := append([]string{"-w", "-t", j.Table, "-I", j.From, "1"}, args...)
		if _, err := d.run.Run(ctx, "", "iptables", insert...); err != nil {
			return fmt.Errorf("hook %s into %s/%s: %w", j.To, j.Table, j.From, err)
		}
	}
	return nil
}

func (d *Dataplane) listSets(ctx context.Context) (map[string]bool, error) {
	out, err := d.run.Run(ctx, "", "ipset", "list", "-n")
	if err != nil {
		return nil, fmt.Errorf("list ipsets: %w", err)
	}
	sets := map[string]bool{}
	for _, l := range strings.Fields(out) {
		if strings.HasPrefix(l, SetPrefix) {
			sets[l] = true
		}
	}
	return sets, nil
}

// listChains returns rampart's chains in table, as iptables-save shows them.
func (d *Dataplane) listChains(ctx context.Context, table string) ([]string, error) {
	out, err := d.run.Run(ctx, "", "iptables-save", "-t", table)
	if err != nil {
		return nil, fmt.Errorf("read %s table: %w", table, err)
	}
	var chains []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, ":"+ChainPrefix) {
			chains = append(chains, strings.Fields(l[1:])[0])
		}
	}
	return chains, nil
}

// Close removes the jumps, chains and sets rampart installed (the blocklist's too).
func (d *Dataplane) Close() error {
	ctx := context.Background()
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	var errs []error
	for _, t := range []string{"raw", "mangle", "filter", "nat"} {
		out, err := d.run.Run(ctx, "", "iptables-save", "-t", t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var chains []string
		var b strings.Builder
		fmt.Fprintf(&b, "*%s\n", t)
		for _, l := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(l, ":"+ChainPrefix):
				chains = append(chains, strings.Fields(l[1:])[0])
			case strings.HasPrefix(l, "-A ") && strings.Contains(l, "-j "+ChainPrefix) && !strings.HasPrefix(l, "-A "+ChainPrefix):
				b.WriteString("-D" + l[2:] + "\n") // a jump from a built-in chain
			}
		}
		for _, c := range chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		for _, c := range chains {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
		b.WriteString("COMMIT\n")
		if _, err := d.run.Run(ctx, b.String(), "iptables-restore", "--noflush"); err != nil {
			errs = append(errs, err)
		}
	}
	sets, err := d.listSets(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for name := range sets {
		if _, err := d.run.Run(ctx, "", "ipset", "destroy", name); err != nil {
			errs = append(errs, err)
		}
	}
	d.applied, d.rawInstalled, d.raw = nil, false, rawState{}
	return errors.Join(errs...)
}
