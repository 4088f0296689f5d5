package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

// Flow events reach the agent through NFLOG: rules on the deny paths and on the first packet
// of allowed connections log to the node's group with a prefix naming what decided, in at
// most 63 bytes (felix's scheme): verdict A|D, direction I|E, then
//
//	N|A|B|C<rule>|<policy>  a rule of a NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy
//	                        or ClusterNetworkPolicy (of either tier: its name is unique)
//	X                     isolation: NetworkPolicies select the pod and no rule matched
//	-                     no policy selects the pod (allowed by default)
//
// where <policy> is namespace/name (or name for the cluster-scoped kinds), or #<hash> when the
// prefix would be longer; the agent resolves hashes from the policies it programmed.
const maxPrefix = 63

// DefaultFlowGroup is the NFLOG group of flow events, when the node gives none.
const DefaultFlowGroup = 1727

var tierLetter = map[ir.TierKind]byte{ir.TierNetworkPolicy: 'N', ir.TierAdmin: 'A', ir.TierBaseline: 'B'}

// kindLetter is the letter naming a policy's kind in prefixes.
func kindLetter(p *ir.Policy) byte {
	if p.Kind == ir.KindCNP {
		return 'C'
	}
	return tierLetter[p.Tier]
}

func verdictDir(allowed bool, dir ir.Direction) string {
	v, d := "D", "I"
	if allowed {
		v = "A"
	}
	if dir == ir.Egress {
		d = "E"
	}
	return v + d
}

// policyID names a policy in prefixes.
func policyID(p *ir.Policy) string {
	if p.Namespace != "" {
		return p.Namespace + "/" + p.Name
	}
	return p.Name
}

// rulePrefix is the prefix of rule r of policy p (Allow or Deny).
func rulePrefix(p *ir.Policy, r *ir.Rule) string {
	head := fmt.Sprintf("%s%c%d|", verdictDir(r.Action == ir.Allow, p.Direction), kindLetter(p), r.Index)
	if id := policyID(p); len(head)+len(id) <= maxPrefix {
		return head + id
	}
	return head + "#" + hash(policyKey(p))
}

// policyKey identifies a policy and direction among the Ruleset's.
func policyKey(p *ir.Policy) string {
	return fmt.Sprintf("%c|%s|%s", kindLetter(p), p.Direction, policyID(p))
}

func isolationPrefix(dir ir.Direction) string { return verdictDir(false, dir) + "X" }
func defaultPrefix(dir ir.Direction) string   { return verdictDir(true, dir) + "-" }

// prefixTable resolves prefixes to deciders, from the policies of the Rulesets programmed. Its
// maps are built when a flow event first needs them, not per sync.
type prefixTable struct {
	rs    *ir.Ruleset
	once  sync.Once
	byKey map[string]*ir.Policy // policyKey -> policy
	byID  map[string]*ir.Policy // "#"+hash(policyKey) -> policy
	// resolver names the policies isolating a pod, as of this Ruleset.
	resolver *flow.Resolver
	// fronts are the frontends the NAT marked packets for (Spec.Frontends).
	fronts map[uint32]MarkedFrontend
}

// frontend returns the frontend a packet's mark names, when it translates to the packet's
// destination: ids are positions in one render, so the tables are tried newest first and
// the backend checked.
func frontend(mark uint32, t flow.Tuple, tables ...*prefixTable) (netip.AddrPort, bool) {
	id := mark & markFront
	if id == 0 {
		return netip.AddrPort{}, false
	}
	for _, tb := range tables {
		if tb == nil {
			continue
		}
		if f, ok := tb.fronts[id]; ok && f.Protocol == t.Protocol && f.Backends[t.Dst] {
			return f.Addr, true
		}
	}
	return netip.AddrPort{}, false
}

// newPrefixTable returns the table of rs and of the frontends its render marks; prev (nil:
// none) is the table it follows, whose address index its resolver may share.
func newPrefixTable(rs *ir.Ruleset, fronts map[uint32]MarkedFrontend, prev *prefixTable) *prefixTable {
	t := &prefixTable{rs: rs, fronts: fronts}
	if prev != nil {
		t.resolver = flow.NewResolverFrom(prev.resolver, rs)
	} else {
		t.resolver = flow.NewResolver(rs)
	}
	return t
}

func (t *prefixTable) indexed() *prefixTable {
	t.once.Do(func() {
		rs := t.rs
		t.byKey, t.byID = map[string]*ir.Policy{}, map[string]*ir.Policy{}
		for d := range rs.Tiers {
			for ti := range rs.Tiers[d] {
				for pi := range rs.Tiers[d][ti].Policies {
					p := &rs.Tiers[d][ti].Policies[pi]
					k := policyKey(p)
					t.byKey[k] = p
					t.byID["#"+hash(k)] = p
				}
			}
		}
	})
	return t
}

// decodePrefix parses a prefix: the direction and verdict it logs, and what decided, looking the
// policy up in tables (the Rulesets programmed, newest first). ok is false for a prefix that is
// not rampart's.
func decodePrefix(prefix string, tables ...*prefixTable) (dir ir.Direction, allowed bool, d flow.Decider, ok bool) {
	if len(prefix) < 3 || (prefix[0] != 'A' && prefix[0] != 'D') || (prefix[1] != 'I' && prefix[1] != 'E') {
		return 0, false, d, false
	}
	allowed = prefix[0] == 'A'
	if prefix[1] == 'E' {
		dir = ir.Egress
	}
	rest := prefix[2:]
	if rest == "X" || rest == "-" {
		return dir, allowed, d, true
	}
	var tier ir.TierKind
	kind := ""
	letter := rest[0]
	switch letter {
	case 'N':
		tier = ir.TierNetworkPolicy
	case 'A':
		tier = ir.TierAdmin
	case 'B':
		tier = ir.TierBaseline
	case 'C':
		tier, kind = ir.TierAdmin, ir.KindCNP // the tier is unknown without the policy
	default:
		return 0, false, d, false
	}
	idxText, id, found := strings.Cut(rest[1:], "|")
	idx, err := strconv.Atoi(idxText)
	if !found || err != nil || idx < 0 {
		return 0, false, d, false
	}
	for _, t := range tables {
		if t == nil {
			continue
		}
		var p *ir.Policy
		if strings.HasPrefix(id, "#") {
			p = t.indexed().byID[id]
		} else {
			p = t.indexed().byKey[fmt.Sprintf("%c|%s|%s", letter, dir, id)]
		}
		if p != nil && idx < len(p.Rules) {
			return dir, allowed, flow.DeciderOf(p, &p.Rules[idx]), true
		}
	}
	if strings.HasPrefix(id, "#") {
		return dir, allowed, flow.Decider{Unresolved: true}, true
	}
	// Not among the policies programmed (a rule a previous agent left): name it as written.
	ns, name, cut := strings.Cut(id, "/")
	if !cut {
		ns, name = "", id
	}
	action := ir.Deny
	if allowed {
		action = ir.Allow
	}
	return dir, allowed, flow.Decider{Known: true, Tier: tier, Kind: kind, Namespace: ns, Name: name, Rule: idx, Action: action}, true
}
