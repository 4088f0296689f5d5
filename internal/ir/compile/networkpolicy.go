package compile

import (
	"fmt"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// networkPolicies compiles networking.k8s.io/v1 NetworkPolicies into the NetworkPolicy tier of
// each direction named in the (defaulted) policyTypes. Rules of a direction not listed in
// policyTypes are ignored, as upstream specifies.
func (k *compiler) networkPolicies() error {
	var tiers [2][]ir.Policy
	for _, key := range model.SortedKeys(k.c.NetworkPolicies) {
		np := k.c.NetworkPolicies[key]
		staged := model.IsStaged(np)
		if staged && !k.opts.Staged {
			continue
		}
		if pols, ok := k.replayNP(np); ok {
			for _, pol := range pols {
				tiers[pol.Direction] = append(tiers[pol.Direction], pol)
			}
			continue
		}
		var compiled []ir.Policy
		podSel, err := k.selector(&np.Spec.PodSelector)
		if err != nil {
			return fmt.Errorf("NetworkPolicy %s: spec.podSelector: %w", key, err)
		}
		subjects := k.selection("subjects|ns="+np.Namespace+"|podsel="+k.describeSelector(&np.Spec.PodSelector), func() []ir.PodID {
			return k.podsIn(np.Namespace, podSel)
		})
		for _, t := range np.Spec.PolicyTypes {
			pol := ir.Policy{Tier: ir.TierNetworkPolicy, Namespace: np.Namespace, Name: np.Name, Subjects: subjects, Staged: staged}
			switch t {
			case networkingv1.PolicyTypeIngress:
				pol.Direction = ir.Ingress
				for i, r := range np.Spec.Ingress {
					rule, err := k.npRule(np.Namespace, i, r.From, r.Ports)
					if err != nil {
						return fmt.Errorf("NetworkPolicy %s: spec.ingress[%d]: %w", key, i, err)
					}
					pol.Rules = append(pol.Rules, rule)
				}
			case networkingv1.PolicyTypeEgress:
				pol.Direction = ir.Egress
				for i, r := range np.Spec.Egress {
					rule, err := k.npRule(np.Namespace, i, r.To, r.Ports)
					if err != nil {
						return fmt.Errorf("NetworkPolicy %s: spec.egress[%d]: %w", key, i, err)
					}
					pol.Rules = append(pol.Rules, rule)
				}
			}
			tiers[pol.Direction] = append(tiers[pol.Direction], pol)
			compiled = append(compiled, pol)
		}
		k.rememberNP(np, compiled)
	}
	for d := range tiers {
		k.tiers[d][ir.TierNetworkPolicy] = ir.Tier{Kind: ir.TierNetworkPolicy, Policies: tiers[d]}
	}
	return nil
}

func (k *compiler) npRule(ns string, index int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (ir.Rule, error) {
	rule := ir.Rule{Index: index, Action: ir.Allow, AnyPeer: len(peers) == 0, Ports: k.npPorts(ports)}
	for _, p := range peers {
		peer, err := k.npPeer(ns, p)
		if err != nil {
			return ir.Rule{}, err
		}
		rule.Peers = append(rule.Peers, peer)
	}
	return rule, nil
}

// npPeer resolves one peer: an ipBlock, or pods chosen by podSelector within the policy's
// namespace, by namespaceSelector (all pods there), or by both at once (pods matching the pod
// selector inside namespaces matching the namespace selector).
func (k *compiler) npPeer(ns string, p networkingv1.NetworkPolicyPeer) (ir.Peer, error) {
	if b := p.IPBlock; b != nil {
		cidr, err := model.ParseCIDR(b.CIDR)
		if err != nil {
			return ir.Peer{}, err
		}
		block := ir.Block{CIDR: cidr}
		desc := "ipBlock " + cidr.String()
		for _, e := range b.Except {
			ex, err := model.ParseCIDR(e)
			if err != nil {
				return ir.Peer{}, err
			}
			block.Except = append(block.Except, ex)
		}
		if len(block.Except) > 0 {
			desc += " except " + strings.Join(b.Except, ", ")
		}
		return ir.Peer{Set: k.addrSet(blockDef([]ir.Block{block}), nil, nil, []ir.Block{block}, desc), Desc: desc}, nil
	}
	nsMatch := func(n string) bool { return n == ns }
	nsDesc := "namespace " + ns
	def := "pods|ns=" + ns
	if p.NamespaceSelector != nil {
		m, err := k.nsSelector(p.NamespaceSelector)
		if err != nil {
			return ir.Peer{}, fmt.Errorf("namespaceSelector: %w", err)
		}
		nsMatch = m
		nsDesc = "namespaces matching " + k.describeSelector(p.NamespaceSelector)
		def = "pods|nssel=" + k.describeSelector(p.NamespaceSelector)
	}
	var podSel labels.Selector
	podDesc := "all pods"
	if p.PodSelector != nil {
		s, err := k.selector(p.PodSelector)
		if err != nil {
			return ir.Peer{}, fmt.Errorf("podSelector: %w", err)
		}
		podSel = s
		podDesc = "pods matching " + k.describeSelector(p.PodSelector)
		def += "|podsel=" + k.describeSelector(p.PodSelector)
	}
	desc := podDesc + " in " + nsDesc
	return ir.Peer{Set: k.podSet(def, func() []ir.PodID { return k.policyPods(nsMatch, podSel) }, desc), Desc: desc}, nil
}

func (k *compiler) npPorts(ports []networkingv1.NetworkPolicyPort) ir.Ports {
	if len(ports) == 0 {
		return ir.Ports{All: true}
	}
	var out ir.Ports
	for _, p := range ports {
		proto, _ := ir.ParseProtocol(string(*p.Protocol))
		switch {
		case p.Port == nil:
			out.Ranges = append(out.Ranges, ir.PortRange{Protocol: proto, First: 0, Last: 65535})
		case p.Port.Type == intstr.String:
			out.Named = append(out.Named, ir.NamedPort{Name: p.Port.StrVal, Protocol: proto, Set: k.namedPortSet(p.Port.StrVal, proto)})
		default:
			last := p.Port.IntVal
			if p.EndPort != nil {
				last = *p.EndPort
			}
			out.Ranges = append(out.Ranges, ir.PortRange{Protocol: proto, First: uint16(p.Port.IntVal), Last: uint16(last)})
		}
	}
	return out
}

// npMemo is one NetworkPolicy object as compiled with the same pods and namespaces: its
// policies (their set ids those of the compile that made them) and what those sets were.
type npMemo struct {
	pols []ir.Policy
	sets map[ir.SetID]memoSet
}

type memoSet struct {
	def string
	set ir.AddrSet
}

// rememberNP keeps what np compiled to, for a Compiler's next compile (with the same pods).
func (k *compiler) rememberNP(np *networkingv1.NetworkPolicy, pols []ir.Policy) {
	if k.nps == nil {
		return
	}
	m := npMemo{pols: pols, sets: map[ir.SetID]memoSet{}}
	for _, pol := range pols {
		for _, r := range pol.Rules {
			for _, p := range r.Peers {
				m.sets[p.Set] = memoSet{def: k.defs[p.Set], set: k.rs.Sets[p.Set]}
			}
		}
	}
	k.nps[np] = m
}

// replayNP returns np's policies as the last compile made them, when the object and the pods
// are the same: its sets are interned again in the order compiling would intern them (each
// rule's named ports, then its peers), so the Ruleset is the one compiling gives.
func (k *compiler) replayNP(np *networkingv1.NetworkPolicy) ([]ir.Policy, bool) {
	if k.cache == nil {
		return nil, false
	}
	m, ok := k.cache.nps[np]
	if !ok {
		return nil, false
	}
	out := make([]ir.Policy, len(m.pols))
	for i, pol := range m.pols {
		rules := slices.Clone(pol.Rules)
		for j, r := range rules {
			r.Ports.Named = slices.Clone(r.Ports.Named)
			for n := range r.Ports.Named {
				r.Ports.Named[n].Set = k.namedPortSet(r.Ports.Named[n].Name, r.Ports.Named[n].Protocol)
			}
			r.Peers = slices.Clone(r.Peers)
			for n := range r.Peers {
				s := m.sets[r.Peers[n].Set]
				id, ok := k.setKey[s.def]
				if !ok {
					id = k.internSet(s.def, s.set.IPs, s.set.Pods, s.set.Blocks, s.set.Desc)
				}
				r.Peers[n].Set = id
			}
			rules[j] = r
		}
		pol.Rules = rules
		out[i] = pol
	}
	k.nps[np] = m
	return out, true
}
