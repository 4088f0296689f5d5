package compile

import (
	"fmt"
	"net/netip"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// adminPolicies compiles the admin and baseline tiers, in the precedence order
// model.Cluster.AdminTier and BaselineTier give (priority, then name; the BANP last).
func (k *compiler) adminPolicies() error {
	for _, t := range []struct {
		tier ir.TierKind
		objs []model.Object
	}{{ir.TierAdmin, k.c.AdminTier()}, {ir.TierBaseline, k.c.BaselineTier()}} {
		var pols [2][]ir.Policy
		for _, o := range t.objs {
			m := o.Meta()
			if model.IsStaged(m) && !k.opts.Staged {
				continue
			}
			kind := "" // the tier's own kind
			if o.Kind == model.KindCNP {
				kind = ir.KindCNP
			}
			prio, _ := model.Priority(o.Obj)
			ps, err := k.adminPolicy(t.tier, kind, m.Name, prio, o.Obj.(metav1.Object))
			if err != nil {
				return fmt.Errorf("%s %s: %w", o.Kind, m.Name, err)
			}
			for _, p := range ps {
				pols[p.Direction] = append(pols[p.Direction], p)
			}
		}
		for d := range pols {
			k.tiers[d][t.tier] = ir.Tier{Kind: t.tier, Policies: pols[d]}
		}
	}
	return nil
}

func (k *compiler) adminPolicy(tier ir.TierKind, kind, name string, prio int32, obj metav1.Object) ([]ir.Policy, error) {
	var subjects []ir.PodID
	switch subj := model.AdminSubject(obj); {
	case subj.Namespaces != nil:
		m, err := k.nsSelector(subj.Namespaces)
		if err != nil {
			return nil, fmt.Errorf("spec.subject.namespaces: %w", err)
		}
		subjects = k.selection("subjects|nssel="+k.describeSelector(subj.Namespaces), func() []ir.PodID { return k.policyPods(m, nil) })
	case subj.Pods != nil:
		m, err := k.nsSelector(&subj.Pods.NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.subject.pods.namespaceSelector: %w", err)
		}
		s, err := k.selector(&subj.Pods.PodSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.subject.pods.podSelector: %w", err)
		}
		subjects = k.selection("subjects|nssel="+k.describeSelector(&subj.Pods.NamespaceSelector)+"|podsel="+k.describeSelector(&subj.Pods.PodSelector),
			func() []ir.PodID { return k.policyPods(m, s) })
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
		pol := ir.Policy{Tier: tier, Kind: kind, Name: name, Priority: prio, Direction: d.dir, Subjects: subjects, Staged: model.IsStaged(obj)}
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
	case "Allow", "Accept":
		rule.Action = ir.Allow
	case "Deny":
		rule.Action = ir.Deny
	case "Pass":
		rule.Action = ir.Pass
	default:
		return ir.Rule{}, fmt.Errorf("action %q", r.Action)
	}
	for _, p := range r.Peers {
		if p.DomainNames != nil {
			// Not enforced (model.Unsupported): fail closed. An Accept rule's domain peer
			// matches nothing; a Deny or Pass rule denies every address on its ports.
			if rule.Action != ir.Allow {
				rule.Action = ir.Deny
				rule.Peers = []ir.Peer{k.everyAddress()}
				break
			}
			rule.Peers = append(rule.Peers, ir.Peer{Set: k.addrSet("nothing", nil, nil, nil, "nothing"), Desc: "domain names (not enforced: matches nothing)"})
			continue
		}
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

// everyAddress is a peer holding every IPv4 and IPv6 address.
func (k *compiler) everyAddress() ir.Peer {
	blocks := []ir.Block{{CIDR: netip.MustParsePrefix("0.0.0.0/0")}, {CIDR: netip.MustParsePrefix("::/0")}}
	desc := "every address (a domainNames peer, not enforced: denied fail-closed)"
	return ir.Peer{Set: k.addrSet(blockDef(blocks), nil, nil, blocks, desc), Desc: desc}
}
