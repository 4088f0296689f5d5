package ebpf

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

// Identity numbers a class of remote addresses that every rule treats alike.
type Identity uint32

// IPCacheEntry maps a prefix to the identity of the addresses it covers (longest prefix wins).
type IPCacheEntry struct {
	Prefix   netip.Prefix
	Identity Identity
}

// PolicyEntry is one verdict: for endpoint, direction, remote identity and protocol, the
// destination ports matching Port/PortBits (the top PortBits bits of Port).
type PolicyEntry struct {
	Endpoint  uint32
	Direction ir.Direction
	Identity  Identity
	Protocol  ir.Protocol
	Port      uint16
	PortBits  uint8
	Allow     bool
	Rule      uint32 // the deciding rule (Rules), 0: none
}

// Tables is everything the programs look up.
type Tables struct {
	IPCache []IPCacheEntry
	// Endpoints numbers the local pods (from 1).
	Endpoints map[ir.PodID]uint32
	// Selected says which (endpoint, direction) have policy; the others allow everything.
	Selected map[[2]uint32]bool
	Policy   []PolicyEntry
	// Rules numbers the rules that Policy entries name.
	Rules *flow.RuleTable
}

// class is what distinguishes remote addresses: the address sets holding them and, per
// named-port set, the (protocol, port) resolutions of the address.
type class struct {
	sets  []ir.SetID
	named map[ir.SetID][]portKey
}

type portKey struct {
	proto ir.Protocol
	port  uint16
}

func (c class) key() string {
	var b strings.Builder
	for _, s := range c.sets {
		fmt.Fprintf(&b, "%d,", s)
	}
	b.WriteString("|")
	ids := make([]int, 0, len(c.named))
	for id := range c.named {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "%d:%v;", id, c.named[ir.SetID(id)])
	}
	return b.String()
}

// Build computes the tables for the pods local reports true for (IPv4 only, as the lab).
func Build(rs *ir.Ruleset, local func(*ir.Pod) bool) (*Tables, error) {
	rules := flow.NewRuleTable(rs)
	t := &Tables{Endpoints: map[ir.PodID]uint32{}, Selected: map[[2]uint32]bool{}, Rules: rules}
	classes, err := t.identities(rs)
	if err != nil {
		return nil, err
	}
	for i := range rs.Pods {
		p := &rs.Pods[i]
		if p.HostNetwork || !local(p) || len(p.IPs) == 0 {
			continue
		}
		ep := uint32(len(t.Endpoints) + 1)
		t.Endpoints[p.ID] = ep
		for _, dir := range []ir.Direction{ir.Ingress, ir.Egress} {
			if len(rs.PoliciesFor(p.ID, dir)) == 0 {
				continue
			}
			t.Selected[[2]uint32{ep, uint32(dir)}] = true
			pr := rulesFor(rs, p, dir)
			for id, c := range classes {
				t.verdicts(rs, p, ep, dir, Identity(id), c, pr)
			}
		}
	}
	return t, nil
}

// identities partitions the IPv4 space: every address's class is decided by the longest prefix,
// among all prefixes any set uses, that contains it (a shorter prefix containing the address
// contains the longer one too). Returns the class of each identity.
func (t *Tables) identities(rs *ir.Ruleset) ([]class, error) {
	type member struct {
		set   ir.SetID
		named *ir.IPPort // for named-port sets
	}
	members := map[netip.Prefix][]member{}
	for i := range rs.Sets {
		for _, p := range rs.Sets[i].Prefixes() {
			if p = p.Masked(); p.Addr().Is4() {
				members[p] = append(members[p], member{set: rs.Sets[i].ID})
			}
		}
	}
	for i := range rs.PortSets {
		for j := range rs.PortSets[i].Entries {
			e := &rs.PortSets[i].Entries[j]
			if e.IP.Is4() {
				p := netip.PrefixFrom(e.IP, 32)
				members[p] = append(members[p], member{set: rs.PortSets[i].ID, named: e})
			}
		}
	}
	root := netip.MustParsePrefix("0.0.0.0/0")
	if _, ok := members[root]; !ok {
		members[root] = nil
	}
	prefixes := make([]netip.Prefix, 0, len(members))
	for p := range members {
		prefixes = append(prefixes, p)
	}
	sort.Slice(prefixes, func(i, j int) bool {
		if prefixes[i].Bits() != prefixes[j].Bits() {
			return prefixes[i].Bits() < prefixes[j].Bits()
		}
		return prefixes[i].Addr().Less(prefixes[j].Addr())
	})

	byKey := map[string]Identity{}
	var classes []class
	for _, p := range prefixes {
		c := class{named: map[ir.SetID][]portKey{}}
		seen := map[ir.SetID]bool{}
		// Every prefix containing p (p itself included) contributes its sets: its ancestors,
		// found by masking p to each shorter length (33 lookups, not a scan of all prefixes).
		for bits := 0; bits <= p.Bits(); bits++ {
			q := netip.PrefixFrom(p.Addr(), bits).Masked()
			for _, m := range members[q] {
				if m.named != nil {
					c.named[m.set] = append(c.named[m.set], portKey{m.named.Protocol, m.named.Port})
					continue
				}
				if !seen[m.set] {
					seen[m.set] = true
					c.sets = append(c.sets, m.set)
				}
			}
		}
		slices.Sort(c.sets)
		for id := range c.named {
			slices.SortFunc(c.named[id], func(a, b portKey) int {
				if a.proto != b.proto {
					return int(a.proto) - int(b.proto)
				}
				return int(a.port) - int(b.port)
			})
		}
		id, ok := byKey[c.key()]
		if !ok {
			id = Identity(len(classes))
			byKey[c.key()] = id
			classes = append(classes, c)
		}
		t.IPCache = append(t.IPCache, IPCacheEntry{Prefix: p, Identity: id})
	}
	return classes, nil
}
