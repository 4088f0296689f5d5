package iptables

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Spec is everything the dataplane installs on a node, rendered from a Ruleset.
type Spec struct {
	Sets []IPSet
	// Tables maps "filter" and "nat" to rampart's chains in that table.
	Tables map[string][]Chain
	// Jumps are the single rules that hook rampart's chains into built-in chains.
	Jumps []Jump
	// Frontends are the Service frontends the NAT translates, by the id their rules mark
	// packets with (markFront).
	Frontends map[uint32]MarkedFrontend
}

// MarkedFrontend is a frontend as flow events name it: the address and port the client
// addressed, and the backends it translates to.
type MarkedFrontend struct {
	Addr     netip.AddrPort
	Protocol ir.Protocol
	Backends map[netip.AddrPort]bool
}

// IPSet is one ipset with its members.
type IPSet struct {
	Name    string
	Type    string // hash:ip, hash:net or hash:ip,port
	Family  string // inet or inet6
	Entries []string
}

// maxElem is the maxelem a set of n members is created with: ipset's default (65,536) and
// doubled until the members fit (a set of every pod of a 150,000-pod cluster overflows the
// default: "Hash is full").
func maxElem(n int) int {
	m := 65536
	for m < n {
		m *= 2
	}
	return m
}

// Chain is a rampart-owned chain and its rules (iptables-restore syntax, without "-A CHAIN").
type Chain struct {
	Name  string
	Rules []string
}

// Jump hooks a rampart chain into a built-in chain.
type Jump struct {
	Table, From, To string
}

// Entries counts the spec's rules per table ("filter_rules", "nat_rules") and set members
// ("ipset_members").
func (s *Spec) Entries() map[string]int {
	out := map[string]int{"filter_rules": 0, "nat_rules": 0, "ipset_members": 0}
	for table, chains := range s.Tables {
		for _, c := range chains {
			out[table+"_rules"] += len(c.Rules)
		}
	}
	for _, set := range s.Sets {
		out["ipset_members"] += len(set.Entries)
	}
	return out
}

// Rule renders the jump as iptables arguments (without -A/-I).
func (j Jump) Rule() string {
	return fmt.Sprintf("-m comment --comment %q -j %s", "rampart", j.To)
}

// Restore renders one table's chains as iptables-restore --noflush input. Declaring a chain
// flushes it, so the whole table's worth of rampart chains is replaced in one transaction;
// chains in remove are deleted after the jumps to them are gone.
func (s *Spec) Restore(table string, remove []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", table)
	chains := s.Tables[table]
	for _, c := range chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
	}
	for _, c := range remove {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "-A %s %s\n", c.Name, r)
		}
	}
	for _, c := range remove {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ChainNames returns the names of one table's chains, sorted.
func (s *Spec) ChainNames(table string) []string {
	var out []string
	for _, c := range s.Tables[table] {
		out = append(out, c.Name)
	}
	sort.Strings(out)
	return out
}

// String renders the whole spec for golden files and debugging.
func (s *Spec) String() string {
	var b strings.Builder
	for _, set := range s.Sets {
		fmt.Fprintf(&b, "ipset %s %s family %s: %s\n", set.Name, set.Type, set.Family, strings.Join(set.Entries, " "))
	}
	for _, j := range s.Jumps {
		fmt.Fprintf(&b, "jump %s %s -> %s\n", j.Table, j.From, j.To)
	}
	for _, t := range []string{"filter", "nat"} {
		if len(s.Tables[t]) > 0 {
			b.WriteString(s.Restore(t, nil))
		}
	}
	return b.String()
}
