package compile

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// adminPolicies compiles AdminNetworkPolicies (admin tier, ordered by priority; equal
// priorities, whose order upstream leaves undefined, are ordered by name) and
// BaselineAdminNetworkPolicies (baseline tier).
func (k *compiler) adminPolicies() error {
	var admin, baseline [2][]ir.Policy
	for _, name := range model.SortedKeys(k.c.ANPs) {
		anp := k.c.ANPs[name]
		if model.IsStaged(anp) && !k.opts.Staged {
			continue
		}
		ps, err := k.adminPolicy(ir.TierAdmin, name, anp.Spec.Priority, anp.Spec.Subject, anp)
		if err != nil {
			return fmt.Errorf("AdminNetworkPolicy %s: %w", name, err)
		}
		for _, p := range ps {
			admin[p.Direction] = append(admin[p.Direction], p)
		}
	}
	for _, name := range model.SortedKeys(k.c.BANPs) {
		banp := k.c.BANPs[name]
		if model.IsStaged(banp) && !k.opts.Staged {
			continue
		}
		ps, err := k.adminPolicy(ir.TierBaseline, name, 0, banp.Spec.Subject, banp)
		if err != nil {
			return fmt.Errorf("BaselineAdminNetworkPolicy %s: %w", name, err)
		}
		for _, p := range ps {
			baseline[p.Direction] = append(baseline[p.Direction], p)
		}
	}
	for d := range admin {
		sort.SliceStable(admin[d], func(i, j int) bool { return admin[d][i].Priority < admin[d][j].Priority })
		k.tiers[d][ir.TierAdmin] = ir.Tier{Kind: ir.TierAdmin, Policies: admin[d]}
		k.tiers[d][ir.TierBaseline] = ir.Tier{Kind: ir.TierBaseline, Policies: baseline[d]}
	}
	return nil
}

func (k *compiler) adminPolicy(tier ir.TierKind, name string, prio int32, subj anpv1alpha1.AdminNetworkPolicySubject, obj any) ([]ir.Policy, error) {
	var subjects []ir.PodID
	switch {
	case subj.Namespaces != nil:
		m, err := k.nsSelector(subj.Namespaces)
		if err != nil {
			return nil, fmt.Errorf("spec.subject.namespaces: %w", err)
		}
		subjects = k.policyPods(m, nil)
	case subj.Pods != nil:
		m, err := k.nsSelector(&subj.Pods.NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.subject.pods.namespaceSelector: %w", err)
		}
		s, err := k.selector(&subj.Pods.PodSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.subject.pods.podSelector: %w", err)
		}
		subjects = k.policyPods(m, s)
	}
	ingress, egress := model.AdminRules(obj)
	var out []ir.Policy
	for _, d := range []struct {
		dir   ir.Direction
		rules []model.AdminRule
	}{{ir.Ingress, ingress}, {ir.Egress, egress}} {
		if len(d.rules) == 0 {
			continue // a policy without rules in a direction does not affect that direction
		}
		pol := ir.Policy{Tier: tier, Name: name, Priority: prio, Direction: d.dir, Subjects: subjects, Staged: model.IsStaged(obj.(metav1.Object))}
		for i, r := range d.rules {
			rule, err := k.adminRule(i, r)
			if err != nil {
				return nil, fmt.Errorf("spec.%s[%d]: %w", d.dir, i, err)
			}
			pol.Rules = append(pol.Rules, rule)
		}
		out = append(out, pol)
	}
	return out, nil
}

func (k *compiler) adminRule(index int, r model.AdminRule) (ir.Rule, error) {
	rule := ir.Rule{Index: index, Name: r.Name}
	switch r.Action {
	case "Allow":
		rule.Action = ir.Allow
	case "Deny":
		rule.Action = ir.Deny
	case "Pass":
		rule.Action = ir.Pass
	default:
		return ir.Rule{}, fmt.Errorf("action %q", r.Action)
	}
	for _, p := range r.Peers {
		peer, err := k.adminPeer(p)
		if err != nil {
			return ir.Rule{}, err
		}
		rule.Peers = append(rule.Peers, peer)
	}
	if r.Ports == nil {
		rule.Ports.All = true
		return rule, nil
	}
	for _, p := range *r.Ports {
		switch {
		case p.PortNumber != nil:
			proto, _ := ir.ParseProtocol(string(p.PortNumber.Protocol))
			n := uint16(p.PortNumber.Port)
			rule.Ports.Ranges = append(rule.Ports.Ranges, ir.PortRange{Protocol: proto, First: n, Last: n})
		case p.PortRange != nil:
			proto, _ := ir.ParseProtocol(string(p.PortRange.Protocol))
			rule.Ports.Ranges = append(rule.Ports.Ranges, ir.PortRange{Protocol: proto, First: uint16(p.PortRange.Start), Last: uint16(p.PortRange.End)})
		case p.NamedPort != nil:
			rule.Ports.Named = append(rule.Ports.Named, ir.NamedPort{Name: *p.NamedPort, Set: k.namedPortSet(*p.NamedPort, 0)})
		}
	}
	return rule, nil
}

func (k *compiler) adminPeer(p anpv1alpha1.AdminNetworkPolicyEgressPeer) (ir.Peer, error) {
	switch {
	case p.Namespaces != nil:
		m, err := k.nsSelector(p.Namespaces)
		if err != nil {
			return ir.Peer{}, fmt.Errorf("namespaces: %w", err)
		}
		desc := "all pods in namespaces matching " + k.describeSelector(p.Namespaces)
		return ir.Peer{Set: k.podSet("pods|nssel="+k.describeSelector(p.Namespaces), func() []ir.PodID { return k.policyPods(m, nil) }, desc), Desc: desc}, nil
	case p.Pods != nil:
		m, err := k.nsSelector(&p.Pods.NamespaceSelector)
		if err != nil {
			return ir.Peer{}, fmt.Errorf("pods.namespaceSelector: %w", err)
		}
		s, err := k.selector(&p.Pods.PodSelector)
		if err != nil {
			return ir.Peer{}, fmt.Errorf("pods.podSelector: %w", err)
		}
		desc := "pods matching " + k.describeSelector(&p.Pods.PodSelector) + " in namespaces matching " + k.describeSelector(&p.Pods.NamespaceSelector)
		return ir.Peer{Set: k.podSet("pods|nssel="+k.describeSelector(&p.Pods.NamespaceSelector)+"|podsel="+k.describeSelector(&p.Pods.PodSelector), func() []ir.PodID { return k.policyPods(m, s) }, desc), Desc: desc}, nil
	case p.Nodes != nil:
		s, err := k.selector(p.Nodes)
		if err != nil {
			return ir.Peer{}, fmt.Errorf("nodes: %w", err)
		}
		ips, names := k.matchingNodes(s)
		def := "nodes|sel=" + k.describeSelector(p.Nodes)
		desc := "nodes matching " + k.describeSelector(p.Nodes)
		if len(names) > 0 {
			desc += " (" + strings.Join(names, ", ") + ")"
		}
		return ir.Peer{Set: k.addrSet(def, ips, nil, nil, desc), Desc: desc}, nil
	case len(p.Networks) > 0:
		var blocks []ir.Block
		var strs []string
		for _, c := range p.Networks {
			pfx, err := model.ParseCIDR(string(c))
			if err != nil {
				return ir.Peer{}, fmt.Errorf("networks: %w", err)
			}
			blocks = append(blocks, ir.Block{CIDR: pfx})
			strs = append(strs, pfx.String())
		}
		desc := "networks " + strings.Join(strs, ", ")
		return ir.Peer{Set: k.addrSet(blockDef(blocks), nil, nil, blocks, desc), Desc: desc}, nil
	}
	// Upstream: a peer with no known field comes from a newer CRD; fail closed by matching
	// nothing. Validation rejects such peers, so this is only reached through the Go API.
	return ir.Peer{Set: k.addrSet("nothing", nil, nil, nil, "nothing"), Desc: "nothing"}, nil
}

func (k *compiler) matchingNodes(s labels.Selector) ([]netip.Addr, []string) {
	var ips []netip.Addr
	var names []string
	for _, n := range k.rs.Nodes {
		if s.Matches(k.nodeLbl[n.Name]) {
			ips = append(ips, n.IPs...)
			names = append(names, n.Name)
		}
	}
	return ips, names
}
