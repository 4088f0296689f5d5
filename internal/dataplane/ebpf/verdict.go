package ebpf

import (
	"slices"
	"strconv"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

// podRules are the rules of one endpoint and direction in evaluation order (admin tier by
// priority, then NetworkPolicy, then baseline), indexed by the peer sets they name, so that a
// remote class is decided by walking only the rules whose peers can match it: the cost per class
// is the rules naming its sets, not every rule of every policy.
type podRules struct {
	rules    []flatRule
	isolated bool               // some NetworkPolicy selects the endpoint in this direction
	anyPeer  []int              // rules that match every peer
	bySet    map[ir.SetID][]int // peer set -> rules naming it
	// localNamed memoizes, for ingress, what a named port set resolves to on this endpoint: it
	// does not depend on the remote class, and a set lists every pod of the cluster.
	localNamed map[ir.SetID][]portKey
}

type flatRule struct {
	tier ir.TierKind
	r    *ir.Rule
}

func rulesFor(rs *ir.Ruleset, pod *ir.Pod, dir ir.Direction) *podRules {
	pr := &podRules{bySet: map[ir.SetID][]int{}, localNamed: map[ir.SetID][]portKey{}}
	refs := rs.PoliciesFor(pod.ID, dir)
	for _, kind := range []ir.TierKind{ir.TierAdmin, ir.TierNetworkPolicy, ir.TierBaseline} {
		for _, ref := range refs {
			if rs.Tiers[dir][ref.Tier].Kind != kind {
				continue
			}
			pol := rs.Policy(dir, ref)
			if kind == ir.TierNetworkPolicy {
				pr.isolated = true
			}
			for i := range pol.Rules {
				r := &pol.Rules[i]
				idx := len(pr.rules)
				pr.rules = append(pr.rules, flatRule{tier: kind, r: r})
				if r.AnyPeer {
					pr.anyPeer = append(pr.anyPeer, idx)
					continue
				}
				seen := map[ir.SetID]bool{}
				for _, p := range r.Peers {
					if !seen[p.Set] {
						seen[p.Set] = true
						pr.bySet[p.Set] = append(pr.bySet[p.Set], idx)
					}
				}
			}
		}
	}
	return pr
}

// key says everything the endpoint's verdicts are decided from, besides the remote classes:
// whether it is isolated, and each rule in order (its tier, id, action, peer sets and ports, by
// name), and the pod's addresses (named ports resolve on them for ingress).
func (pr *podRules) key(rs *ir.Ruleset, rules *flow.RuleTable, pod *ir.Pod) string {
	b := make([]byte, 0, 64*len(pr.rules)+32)
	for _, ip := range pod.IPs {
		b = ip.AppendTo(b)
		b = append(b, ',')
	}
	if pr.isolated {
		b = append(b, 'i')
	}
	for _, fr := range pr.rules {
		r := fr.r
		b = append(b, '|', byte('0'+fr.tier), byte('0'+r.Action))
		b = strconv.AppendUint(b, uint64(rules.ID(r)), 10)
		if r.AnyPeer {
			b = append(b, '*')
		}
		for _, p := range r.Peers {
			b = append(b, ',')
			b = append(b, rs.Sets[p.Set].Name...)
		}
		b = append(b, '/')
		if r.Ports.All {
			b = append(b, '*')
		}
		for _, rg := range r.Ports.Ranges {
			b = strconv.AppendUint(append(b, ','), uint64(rg.Protocol), 10)
			b = strconv.AppendUint(append(b, ':'), uint64(rg.First), 10)
			b = strconv.AppendUint(append(b, '-'), uint64(rg.Last), 10)
		}
		for _, n := range r.Ports.Named {
			b = append(append(b, ','), rs.PortSets[n.Set].Name...)
		}
	}
	return string(b)
}

// candidates lists, in evaluation order, the rules whose peers match class c.
func (pr *podRules) candidates(c class) []int {
	out := append([]int(nil), pr.anyPeer...)
	for _, s := range c.sets {
		out = append(out, pr.bySet[s]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// verdicts appends the entries of one endpoint, direction and identity: the port space of each
// protocol is cut at every boundary a rule matching the identity uses, each piece is decided
// once, and equal neighbours are merged before being encoded as prefixes.
func (t *Tables) verdicts(rs *ir.Ruleset, pod *ir.Pod, ep uint32, dir ir.Direction, id Identity, c class, pr *podRules) {
	cand := pr.candidates(c)
	if len(cand) == 0 && pr.isolated {
		return // every port is denied by isolation: the programs deny what has no entry
	}
	for _, proto := range ir.Protocols {
		bounds := []int{0, 65536}
		for _, i := range cand {
			r := pr.rules[i].r
			for _, rg := range r.Ports.Ranges {
				if rg.Protocol == proto {
					bounds = append(bounds, int(rg.First), int(rg.Last)+1)
				}
			}
			for _, n := range r.Ports.Named {
				for _, pk := range pr.namedPorts(rs, pod, dir, c, n) {
					if pk.proto == proto {
						bounds = append(bounds, int(pk.port), int(pk.port)+1)
					}
				}
			}
		}
		slices.Sort(bounds)
		bounds = slices.Compact(bounds)
		// Neighbouring pieces merge when the same rule decides them the same way (the rule id is
		// what flow records name).
		start, cur := 0, t.verdict(pr.decide(rs, pod, dir, cand, c, proto, 0))
		for i := 1; i < len(bounds); i++ {
			next := 65536
			nextV := cur
			if bounds[i] < 65536 {
				next = bounds[i]
				nextV = t.verdict(pr.decide(rs, pod, dir, cand, c, proto, uint16(next)))
				if nextV == cur {
					continue
				}
			}
			// A denial no rule decided is what a missing entry means: the table stays small (most
			// remote classes match no rule of a given endpoint).
			if cur != (verdict{}) {
				for _, pfx := range rangePrefixes(start, next-1) {
					t.Policy = append(t.Policy, PolicyEntry{Endpoint: ep, Direction: dir, Identity: id, Protocol: proto, Port: pfx.port, PortBits: pfx.bits, Allow: cur.allow, Rule: cur.rule})
				}
			}
			start, cur = next, nextV
		}
	}
}

// namedPorts resolves a named port on the destination: the local pod for ingress, the remote
// class for egress.
func (pr *podRules) namedPorts(rs *ir.Ruleset, pod *ir.Pod, dir ir.Direction, c class, n ir.NamedPort) []portKey {
	if dir == ir.Egress {
		return c.named[n.Set]
	}
	if out, ok := pr.localNamed[n.Set]; ok {
		return out
	}
	out := []portKey{}
	for _, e := range rs.PortSets[n.Set].Entries {
		if slices.Contains(pod.IPs, e.IP) {
			out = append(out, portKey{e.Protocol, e.Port})
		}
	}
	pr.localNamed[n.Set] = out
	return out
}

type verdict struct {
	allow bool
	rule  uint32
}

func (t *Tables) verdict(allow bool, r *ir.Rule) verdict {
	return verdict{allow, t.Rules.ID(r)}
}

// decide walks the tiers for one (endpoint, remote class, protocol, port) over the candidate
// rules (those whose peers match the class), in evaluation order: the first admin rule that
// matches decides (Pass skips the rest of the admin tier); then any NetworkPolicy rule allows;
// an isolated endpoint denies the rest; then the first baseline rule decides (Pass skips the
// rest of the baseline tier); else allow. It returns the deciding rule too (nil: isolation or
// default allow), the one the evaluator names.
func (pr *podRules) decide(rs *ir.Ruleset, pod *ir.Pod, dir ir.Direction, cand []int, c class, proto ir.Protocol, port uint16) (bool, *ir.Rule) {
	portMatches := func(r *ir.Rule) bool {
		if r.Ports.All {
			return true
		}
		for _, rg := range r.Ports.Ranges {
			if rg.Contains(proto, port) {
				return true
			}
		}
		for _, n := range r.Ports.Named {
			if slices.Contains(pr.namedPorts(rs, pod, dir, c, n), portKey{proto, port}) {
				return true
			}
		}
		return false
	}
	passed, baselinePassed := false, false
	for _, i := range cand {
		fr := pr.rules[i]
		switch fr.tier {
		case ir.TierAdmin:
			if passed || !portMatches(fr.r) {
				continue
			}
			switch fr.r.Action {
			case ir.Allow:
				return true, fr.r
			case ir.Deny:
				return false, fr.r
			}
			passed = true // Pass: on to NetworkPolicy
		case ir.TierNetworkPolicy:
			if portMatches(fr.r) {
				return true, fr.r
			}
		case ir.TierBaseline:
			if pr.isolated {
				return false, nil
			}
			if baselinePassed || !portMatches(fr.r) {
				continue
			}
			if fr.r.Action == ir.Pass {
				baselinePassed = true // on to the default
				continue
			}
			return fr.r.Action == ir.Allow, fr.r
		}
	}
	return !pr.isolated, nil
}

type portPrefix struct {
	port uint16
	bits uint8
}

// rangePrefixes covers [lo, hi] (0..65535) with the fewest prefixes of the 16-bit port space.
func rangePrefixes(lo, hi int) []portPrefix {
	var out []portPrefix
	for lo <= hi {
		size := 1
		for bits := 0; bits < 16; bits++ {
			s := size << 1
			if lo%s != 0 || lo+s-1 > hi {
				break
			}
			size = s
		}
		b := 16
		for x := size; x > 1; x >>= 1 {
			b--
		}
		out = append(out, portPrefix{uint16(lo), uint8(b)})
		lo += size
	}
	return out
}
