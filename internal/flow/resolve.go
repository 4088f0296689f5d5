package flow

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

// RuleTable numbers every rule of a Ruleset (from 1; 0 is "no rule"), so that a dataplane can
// store a compact id with each verdict and name the rule again when it reports a flow. Rules
// that name the same way (the same policy, rule, name and action) share an id.
type RuleTable struct {
	ids   map[*ir.Rule]uint32
	rules []Decider
	byKey map[deciderKey]uint32
}

// deciderKey is what names a rule in a record.
type deciderKey struct {
	tier      ir.TierKind
	kind      string
	namespace string
	name      string
	rule      int
	ruleName  string
	action    ir.Action
}

func keyOf(d Decider) deciderKey {
	return deciderKey{d.Tier, d.Kind, d.Namespace, d.Name, d.Rule, d.RuleName, d.Action}
}

// NewRuleTable numbers rs's rules in evaluation order.
func NewRuleTable(rs *ir.Ruleset) *RuleTable { return NextRuleTable(rs, nil) }

// NextRuleTable numbers rs's rules keeping the ids prev gave rules that are still there, so
// that a dataplane holding prev's ids rewrites only the verdicts of rules that changed. The
// ids of rules gone are given to new ones (each table resolves its own ids).
func NextRuleTable(rs *ir.Ruleset, prev *RuleTable) *RuleTable {
	t := &RuleTable{ids: map[*ir.Rule]uint32{}, byKey: map[deciderKey]uint32{}}
	if prev != nil { // sized as the last: most changes keep the number of rules
		t.ids, t.byKey = make(map[*ir.Rule]uint32, len(prev.ids)), make(map[deciderKey]uint32, len(prev.byKey))
		t.rules = make([]Decider, 0, len(prev.rules))
	}
	var fresh []*ir.Rule
	var freshDecider []Decider
	for d := range rs.Tiers {
		for ti := range rs.Tiers[d] {
			for pi := range rs.Tiers[d][ti].Policies {
				p := &rs.Tiers[d][ti].Policies[pi]
				for ri := range p.Rules {
					r := &p.Rules[ri]
					dec := DeciderOf(p, r)
					k := keyOf(dec)
					if id, ok := t.byKey[k]; ok {
						t.ids[r] = id
						continue
					}
					if prev != nil {
						if id, ok := prev.byKey[k]; ok {
							t.set(id, k, dec)
							t.ids[r] = id
							continue
						}
					}
					fresh = append(fresh, r)
					freshDecider = append(freshDecider, dec)
				}
			}
		}
	}
	next := uint32(1)
	for i, r := range fresh {
		k := keyOf(freshDecider[i])
		if id, ok := t.byKey[k]; ok {
			t.ids[r] = id
			continue
		}
		for int(next) <= len(t.rules) && t.rules[next-1].Known {
			next++
		}
		t.set(next, k, freshDecider[i])
		t.ids[r] = next
	}
	return t
}

// set gives id to the rule named d.
func (t *RuleTable) set(id uint32, k deciderKey, d Decider) {
	for int(id) > len(t.rules) {
		t.rules = append(t.rules, Decider{})
	}
	t.rules[id-1] = d
	t.byKey[k] = id
}

// DeciderOf names rule r of policy p.
func DeciderOf(p *ir.Policy, r *ir.Rule) Decider {
	return Decider{Known: true, Tier: p.Tier, Kind: p.Kind, Namespace: p.Namespace, Name: p.Name, Rule: r.Index, RuleName: r.Name, Action: r.Action}
}

// policy is what the decider knows of its policy, for its names.
func (d Decider) policy() *ir.Policy { return &ir.Policy{Tier: d.Tier, Kind: d.Kind} }

// ID returns the id of a rule of the table's Ruleset (0 for nil).
func (t *RuleTable) ID(r *ir.Rule) uint32 {
	if r == nil {
		return 0
	}
	return t.ids[r]
}

// Decider resolves an id; 0 resolves to the zero Decider (no rule), an unknown id to one
// marked Unresolved.
func (t *RuleTable) Decider(id uint32) Decider {
	switch {
	case id == 0:
		return Decider{}
	case t == nil || int(id) > len(t.rules) || !t.rules[id-1].Known:
		return Decider{Unresolved: true}
	}
	return t.rules[id-1]
}

// Resolver names the ends of flows and the policies isolating a pod, from the Ruleset in force.
// Its indexes are built on first use: a dataplane keeps one per generation and most are never
// asked.
type Resolver struct {
	rs   *ir.Ruleset
	once sync.Once
	ev   *policy.Evaluator // its address index: which pod an address is
	svcs map[svcKey]*ir.Service
	// staged evaluates the enforced policies together with the staged ones (nil: none staged).
	staged *policy.Evaluator
	// base is the evaluator of an earlier resolver whose address index ev may share; built is
	// ev once indexed (what NewResolverFrom reads from another goroutine).
	base  *policy.Evaluator
	built atomic.Pointer[policy.Evaluator]
}

type svcKey struct {
	ip    netip.Addr
	port  uint16
	proto ir.Protocol
}

// NewResolver returns a resolver for rs.
func NewResolver(rs *ir.Ruleset) *Resolver { return &Resolver{rs: rs} }

// NewResolverFrom is NewResolver sharing the address index of prev's evaluator, if prev has
// built one, where rs did not change its pods and nodes (policy.NewFrom).
func NewResolverFrom(prev *Resolver, rs *ir.Ruleset) *Resolver {
	r := &Resolver{rs: rs}
	if prev != nil {
		r.base = prev.built.Load() // not prev itself: resolvers never indexed must not chain
	}
	return r
}

// NewResolverFor returns a resolver sharing an evaluator already built for its Ruleset.
func NewResolverFor(ev *policy.Evaluator) *Resolver {
	r := &Resolver{rs: ev.Ruleset()}
	r.once.Do(func() { r.index(ev) })
	return r
}

func (r *Resolver) index(ev *policy.Evaluator) {
	defer r.built.Store(ev)
	r.ev, r.svcs = ev, map[svcKey]*ir.Service{}
	for i := range r.rs.Services {
		s := &r.rs.Services[i]
		// Every address a Service is reached at: its ClusterIPs, external and load-balancer
		// addresses, and its node ports on every node's addresses.
		for _, list := range [][]netip.Addr{s.ClusterIPs, s.ExternalIPs, s.LoadBalancerIPs} {
			for _, ip := range list {
				for _, sp := range s.Ports {
					r.svcs[svcKey{ip, sp.Port, sp.Protocol}] = s
				}
			}
		}
		for _, sp := range s.Ports {
			if sp.NodePort == 0 {
				continue
			}
			for _, n := range r.rs.Nodes {
				for _, ip := range n.IPs {
					r.svcs[svcKey{ip, sp.NodePort, sp.Protocol}] = s
				}
			}
		}
	}
}

// indexed builds the indexes once.
func (r *Resolver) indexed() *Resolver {
	r.once.Do(func() {
		r.index(policy.NewFrom(r.base, r.rs))
		r.base = nil
	})
	return r
}

// Ruleset returns the Ruleset the resolver names flows from.
func (r *Resolver) Ruleset() *ir.Ruleset { return r.rs }

// Evaluator returns the evaluator of the resolver's Ruleset.
func (r *Resolver) Evaluator() *policy.Evaluator { return r.indexed().ev }

// Pod returns the pod with address ip, or nil.
func (r *Resolver) Pod(ip netip.Addr) *ir.Pod {
	if r == nil {
		return nil
	}
	return r.Evaluator().Endpoint(ip).Pod
}

func (r *Resolver) endpoint(ap netip.AddrPort) Endpoint {
	e := Endpoint{IP: ap.Addr().String(), Port: ap.Port()}
	if p := r.Pod(ap.Addr()); p != nil {
		e.Namespace, e.Pod = p.Namespace, p.Name
	}
	return e
}

// Record builds the record of an aggregated connection.
func (r *Resolver) Record(node string, ev *Event) Record {
	rec := Record{
		Node:        node,
		Source:      r.endpoint(ev.Tuple.Src),
		Destination: r.endpoint(ev.Tuple.Dst),
		Protocol:    ev.Tuple.Protocol.String(),
		Direction:   ev.Direction.String(),
		Verdict:     Allowed,
	}
	if !ev.Allowed {
		rec.Verdict = Denied
	}
	if ev.Service.IsValid() {
		sr := &ServiceRef{IP: ev.Service.Addr().String(), Port: ev.Service.Port()}
		if r != nil {
			if s := r.indexed().svcs[svcKey{ev.Service.Addr(), ev.Service.Port(), ev.Tuple.Protocol}]; s != nil {
				sr.Namespace, sr.Name = s.Namespace, s.Name
			}
		}
		rec.Destination.Service = sr
	}
	rec.Policy = r.PolicyRef(ev)
	if r != nil && r.staged != nil {
		rec.Staged = r.stagedVerdict(ev)
	}
	return rec
}

// WithStaged makes records carry what the staged policies would decide: ev evaluates the
// Ruleset compiled with them (compile.Options.Staged).
func (r *Resolver) WithStaged(ev *policy.Evaluator) *Resolver {
	r.staged = ev
	return r
}

// stagedVerdict is the record's side decided with the staged policies in force too, when a
// staged policy decides it or its verdict differs from the enforced one.
func (r *Resolver) stagedVerdict(ev *Event) *Staged {
	d := r.staged.Verdict(policy.Flow{Src: ev.Tuple.Src.Addr(), Dst: ev.Tuple.Dst.Addr(), Protocol: ev.Tuple.Protocol, Port: ev.Tuple.Dst.Port()})
	side := d.Ingress
	if ev.Direction == ir.Egress {
		side = d.Egress
	}
	var ref *PolicyRef
	byStaged := false
	switch {
	case side.Decider != nil:
		p := side.Decider
		rule := side.Rule
		ref = &PolicyRef{Kind: p.KindName(), Tier: p.TierName(), Namespace: p.Namespace, Name: p.Name, Rule: &rule, RuleName: side.RuleName, Action: side.Action}
		byStaged = p.Staged
	case len(side.Isolating) > 0:
		ref = isolation(side.Isolating, func(p *ir.Policy) bool { return p.Staged })
		for _, p := range side.Isolating {
			byStaged = byStaged || p.Staged
		}
	}
	if !byStaged && side.Allowed == ev.Allowed {
		return nil
	}
	s := &Staged{Verdict: Allowed, Policy: ref}
	if !side.Allowed {
		s.Verdict = Denied
	}
	return s
}

// isolation names a denial by isolation: the first of the isolating policies that prefer
// picks, else the first with no rules (a default deny), else the first; all in isolated_by.
func isolation(pols []*ir.Policy, prefer func(*ir.Policy) bool) *PolicyRef {
	ref := &PolicyRef{Kind: ir.TierNetworkPolicy.String(), Action: ir.Deny.String()}
	var named *ir.Policy
	rank := func(p *ir.Policy) int {
		switch {
		case prefer != nil && prefer(p):
			return 0
		case len(p.Rules) == 0:
			return 1
		}
		return 2
	}
	for _, p := range pols {
		if named == nil || rank(p) < rank(named) {
			named = p
		}
		ref.IsolatedBy = append(ref.IsolatedBy, PolicyName{Kind: p.KindName(), Namespace: p.Namespace, Name: p.Name})
	}
	ref.Namespace, ref.Name = named.Namespace, named.Name
	return ref
}

// PolicyRef names what decided an event (a record's policy); a denial with no rule is
// isolation by NetworkPolicy. Nil: no policy decided.
func (r *Resolver) PolicyRef(ev *Event) *PolicyRef {
	d := ev.Decider
	if d.Known {
		rule := d.Rule
		p := d.policy()
		return &PolicyRef{Kind: p.KindName(), Tier: p.TierName(), Namespace: d.Namespace, Name: d.Name, Rule: &rule, RuleName: d.RuleName, Action: p.ActionName(d.Action)}
	}
	if d.Unresolved {
		action := ir.Deny
		if ev.Allowed {
			action = ir.Allow
		}
		return &PolicyRef{Kind: "unknown", Name: "unresolved (programmed by another agent generation)", Action: action.String()}
	}
	if ev.Allowed {
		return nil
	}
	if len(d.Isolating) > 0 {
		return isolation(d.Isolating, nil)
	}
	if r == nil {
		return nil
	}
	// The policy named is the first isolating one with no rules in this direction (a default
	// deny: it is what denied), else the first isolating one; isolated_by lists them all.
	pols := r.Isolating(ev.Tuple.Subject(ev.Direction), ev.Direction)
	if len(pols) == 0 {
		return nil
	}
	return isolation(pols, nil)
}

// Isolating returns the NetworkPolicies selecting the pod with address ip in direction dir.
func (r *Resolver) Isolating(ip netip.Addr, dir ir.Direction) []*ir.Policy {
	pod := r.Pod(ip)
	if pod == nil {
		return nil
	}
	var pols []*ir.Policy
	for _, pr := range r.rs.PoliciesFor(pod.ID, dir) {
		if p := r.rs.Policy(dir, pr); p.Tier == ir.TierNetworkPolicy {
			pols = append(pols, p)
		}
	}
	return pols
}
