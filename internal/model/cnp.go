package model

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// Limits of the ClusterNetworkPolicy CRD schema (network-policy-api v0.2+: 25 where v1alpha1
// allowed 100).
const (
	maxCNPRules   = 25
	maxCNPPeers   = 25
	maxCNPProtos  = 25
	maxCNPDomains = 25
	maxCIDRLen    = 43
)

// domainNamePattern is the CRD's pattern for a DomainName.
var domainNamePattern = regexp.MustCompile(`^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$`)

// validateCNP checks a ClusterNetworkPolicy as its CRD's OpenAPI schema and CEL rules do.
func validateCNP(obj *cnpv1alpha2.ClusterNetworkPolicy) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	switch obj.Spec.Tier {
	case cnpv1alpha2.AdminTier, cnpv1alpha2.BaselineTier:
	case "":
		errs = append(errs, field.Required(p.Child("tier"), "must be Admin or Baseline"))
	default:
		errs = append(errs, field.NotSupported(p.Child("tier"), obj.Spec.Tier, []string{string(cnpv1alpha2.AdminTier), string(cnpv1alpha2.BaselineTier)}))
	}
	if obj.Spec.Priority < 0 || obj.Spec.Priority > maxANPPriority {
		errs = append(errs, field.Invalid(p.Child("priority"), obj.Spec.Priority, fmt.Sprintf("must be between 0 and %d", maxANPPriority)))
	}
	errs = append(errs, validateSubject(cnpSubject(obj.Spec.Subject), p.Child("subject"))...)
	if len(obj.Spec.Ingress) > maxCNPRules {
		errs = append(errs, field.TooMany(p.Child("ingress"), len(obj.Spec.Ingress), maxCNPRules))
	}
	if len(obj.Spec.Egress) > maxCNPRules {
		errs = append(errs, field.TooMany(p.Child("egress"), len(obj.Spec.Egress), maxCNPRules))
	}
	for i, r := range obj.Spec.Ingress {
		rp := p.Child("ingress").Index(i)
		errs = append(errs, validateCNPRuleHead(r.Name, r.Action, len(r.From), rp.Child("from"), rp)...)
		for j, peer := range r.From {
			errs = append(errs, validateCNPPeer(cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: peer.Namespaces, Pods: peer.Pods}, rp.Child("from").Index(j))...)
		}
		errs = append(errs, validateCNPProtocols(r.Protocols, rp.Child("protocols"))...)
	}
	for i, r := range obj.Spec.Egress {
		rp := p.Child("egress").Index(i)
		errs = append(errs, validateCNPRuleHead(r.Name, r.Action, len(r.To), rp.Child("to"), rp)...)
		nonPod := false
		for j, peer := range r.To {
			errs = append(errs, validateCNPPeer(peer, rp.Child("to").Index(j))...)
			nonPod = nonPod || peer.Networks != nil || peer.Nodes != nil || peer.DomainNames != nil
		}
		errs = append(errs, validateCNPProtocols(r.Protocols, rp.Child("protocols"))...)
		if nonPod {
			for j, proto := range r.Protocols {
				if proto.DestinationNamedPort != "" {
					errs = append(errs, field.Invalid(rp.Child("protocols").Index(j).Child("destinationNamedPort"), proto.DestinationNamedPort,
						"networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames"))
				}
			}
		}
	}
	return errs
}

func validateCNPRuleHead(name string, action cnpv1alpha2.ClusterNetworkPolicyRuleAction, peers int, peersPath, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(name) > maxRuleNameLen {
		errs = append(errs, field.TooLong(p.Child("name"), name, maxRuleNameLen))
	}
	switch action {
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept, cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny, cnpv1alpha2.ClusterNetworkPolicyRuleActionPass:
	case "":
		errs = append(errs, field.Required(p.Child("action"), "must be Accept, Deny or Pass"))
	default:
		errs = append(errs, field.NotSupported(p.Child("action"), action, []string{"Accept", "Deny", "Pass"}))
	}
	if peers == 0 {
		errs = append(errs, field.Required(peersPath, "at least one peer is required"))
	}
	if peers > maxCNPPeers {
		errs = append(errs, field.TooMany(peersPath, peers, maxCNPPeers))
	}
	return errs
}

// validateCNPPeer checks a peer as validateAdminPeer does (one field, selectors, networks),
// plus what v0.2+ added: canonical CIDRs and well-formed domain names.
func validateCNPPeer(peer cnpv1alpha2.ClusterNetworkPolicyEgressPeer, p *field.Path) field.ErrorList {
	errs := validateAdminPeer(cnpPeer(peer), p)
	for i, c := range peer.Networks {
		errs = append(errs, validateCanonicalCIDR(p.Child("networks").Index(i), string(c))...)
	}
	if peer.DomainNames != nil {
		dp := p.Child("domainNames")
		if len(peer.DomainNames) == 0 {
			errs = append(errs, field.Required(dp, "must have at least 1 item when set"))
		}
		if len(peer.DomainNames) > maxCNPDomains {
			errs = append(errs, field.TooMany(dp, len(peer.DomainNames), maxCNPDomains))
		}
		seen := map[cnpv1alpha2.DomainName]bool{}
		for i, d := range peer.DomainNames {
			if !domainNamePattern.MatchString(string(d)) {
				errs = append(errs, field.Invalid(dp.Index(i), d, "must be a domain name, optionally prefixed by '*.' (e.g. kubernetes.io, *.example.com)"))
			}
			if seen[d] {
				errs = append(errs, field.Duplicate(dp.Index(i), d))
			}
			seen[d] = true
		}
	}
	return errs
}

// validateCanonicalCIDR is what the CRD adds to a CIDR that parses (validateCIDR reports those
// that do not): at most 43 characters, and equal to itself masked (10.0.0.0/8, not 10.1.2.3/8).
func validateCanonicalCIDR(p *field.Path, s string) field.ErrorList {
	if len(s) > maxCIDRLen {
		return field.ErrorList{field.TooLong(p, s, maxCIDRLen)}
	}
	if pfx, err := netip.ParsePrefix(s); err == nil && pfx.Masked() != pfx {
		return field.ErrorList{field.Invalid(p, s, fmt.Sprintf("must be in canonical form (%s): Invalid CIDR format provided", pfx.Masked()))}
	}
	return nil
}

func validateCNPProtocols(protos []cnpv1alpha2.ClusterNetworkPolicyProtocol, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if protos != nil && len(protos) == 0 {
		errs = append(errs, field.Required(p, "must have at least 1 item when set"))
	}
	if len(protos) > maxCNPProtos {
		errs = append(errs, field.TooMany(p, len(protos), maxCNPProtos))
	}
	for i, proto := range protos {
		pp := p.Index(i)
		n := 0
		matches := []struct {
			name string
			set  bool
			dp   *cnpv1alpha2.Port
		}{{name: "tcp"}, {name: "udp"}, {name: "sctp"}}
		if proto.TCP != nil {
			matches[0].set, matches[0].dp = true, proto.TCP.DestinationPort
		}
		if proto.UDP != nil {
			matches[1].set, matches[1].dp = true, proto.UDP.DestinationPort
		}
		if proto.SCTP != nil {
			matches[2].set, matches[2].dp = true, proto.SCTP.DestinationPort
		}
		for _, m := range matches {
			if !m.set {
				continue
			}
			n++
			if m.dp == nil {
				errs = append(errs, field.Required(pp.Child(m.name, "destinationPort"), "must be set (an empty "+m.name+" match is not allowed)"))
				continue
			}
			errs = append(errs, validateCNPPort(*m.dp, pp.Child(m.name, "destinationPort"))...)
		}
		if proto.DestinationNamedPort != "" {
			n++
			for _, msg := range validation.IsValidPortName(proto.DestinationNamedPort) {
				errs = append(errs, field.Invalid(pp.Child("destinationNamedPort"), proto.DestinationNamedPort, msg))
			}
		}
		if n != 1 {
			errs = append(errs, field.Invalid(pp, n, "exactly one of tcp, udp, sctp or destinationNamedPort must be set"))
		}
	}
	return errs
}

func validateCNPPort(port cnpv1alpha2.Port, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case port.Number != 0 && port.Range != nil:
		errs = append(errs, field.Invalid(p, "number, range", "exactly one of number or range must be set"))
	case port.Range != nil:
		r := port.Range
		for _, msg := range validation.IsValidPortNum(int(r.Start)) {
			errs = append(errs, field.Invalid(p.Child("range", "start"), r.Start, msg))
		}
		for _, msg := range validation.IsValidPortNum(int(r.End)) {
			errs = append(errs, field.Invalid(p.Child("range", "end"), r.End, msg))
		}
		if r.Start >= r.End {
			errs = append(errs, field.Invalid(p.Child("range"), fmt.Sprintf("%d-%d", r.Start, r.End), "Start port must be less than End port"))
		}
	default:
		for _, msg := range validation.IsValidPortNum(int(port.Number)) {
			errs = append(errs, field.Invalid(p.Child("number"), port.Number, msg))
		}
	}
	return errs
}

func cnpSubject(s cnpv1alpha2.ClusterNetworkPolicySubject) anpv1alpha1.AdminNetworkPolicySubject {
	out := anpv1alpha1.AdminNetworkPolicySubject{Namespaces: s.Namespaces}
	if s.Pods != nil {
		out.Pods = &anpv1alpha1.NamespacedPod{NamespaceSelector: s.Pods.NamespaceSelector, PodSelector: s.Pods.PodSelector}
	}
	return out
}

// AdminSubject returns the subject of an ANP, BANP or ClusterNetworkPolicy in one shape.
func AdminSubject(obj any) anpv1alpha1.AdminNetworkPolicySubject {
	switch obj := obj.(type) {
	case *anpv1alpha1.AdminNetworkPolicy:
		return obj.Spec.Subject
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		return obj.Spec.Subject
	case *cnpv1alpha2.ClusterNetworkPolicy:
		return cnpSubject(obj.Spec.Subject)
	}
	return anpv1alpha1.AdminNetworkPolicySubject{}
}

// cnpRules converts a ClusterNetworkPolicy's rules to the shared shape: Accept stays Accept,
// protocols become ports (a number, an inclusive range or a named port).
func cnpRules(obj *cnpv1alpha2.ClusterNetworkPolicy) (ingress, egress []AdminRule) {
	for _, r := range obj.Spec.Ingress {
		peers := make([]anpv1alpha1.AdminNetworkPolicyEgressPeer, len(r.From))
		for i, f := range r.From {
			peers[i] = cnpPeer(cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: f.Namespaces, Pods: f.Pods})
		}
		ingress = append(ingress, AdminRule{Name: r.Name, Action: string(r.Action), Peers: peers, Ports: cnpPorts(r.Protocols)})
	}
	for _, r := range obj.Spec.Egress {
		rule := AdminRule{Name: r.Name, Action: string(r.Action), Ports: cnpPorts(r.Protocols)}
		for _, t := range r.To {
			rule.Peers = append(rule.Peers, cnpPeer(t))
			rule.DomainNames = rule.DomainNames || t.DomainNames != nil
		}
		egress = append(egress, rule)
	}
	return ingress, egress
}

func cnpPeer(p cnpv1alpha2.ClusterNetworkPolicyEgressPeer) anpv1alpha1.AdminNetworkPolicyEgressPeer {
	out := anpv1alpha1.AdminNetworkPolicyEgressPeer{Namespaces: p.Namespaces, Nodes: p.Nodes}
	if p.Pods != nil {
		out.Pods = &anpv1alpha1.NamespacedPod{NamespaceSelector: p.Pods.NamespaceSelector, PodSelector: p.Pods.PodSelector}
	}
	for _, n := range p.Networks {
		out.Networks = append(out.Networks, anpv1alpha1.CIDR(n))
	}
	for _, d := range p.DomainNames {
		out.DomainNames = append(out.DomainNames, anpv1alpha1.DomainName(d))
	}
	return out
}

func cnpPorts(protos []cnpv1alpha2.ClusterNetworkPolicyProtocol) *[]anpv1alpha1.AdminNetworkPolicyPort {
	if protos == nil {
		return nil
	}
	out := []anpv1alpha1.AdminNetworkPolicyPort{}
	add := func(proto string, dp *cnpv1alpha2.Port) {
		switch {
		case dp == nil:
		case dp.Range != nil:
			out = append(out, anpv1alpha1.AdminNetworkPolicyPort{PortRange: &anpv1alpha1.PortRange{Protocol: corev1.Protocol(proto), Start: dp.Range.Start, End: dp.Range.End}})
		default:
			out = append(out, anpv1alpha1.AdminNetworkPolicyPort{PortNumber: &anpv1alpha1.Port{Protocol: corev1.Protocol(proto), Port: dp.Number}})
		}
	}
	for _, p := range protos {
		switch {
		case p.TCP != nil:
			add("TCP", p.TCP.DestinationPort)
		case p.UDP != nil:
			add("UDP", p.UDP.DestinationPort)
		case p.SCTP != nil:
			add("SCTP", p.SCTP.DestinationPort)
		case p.DestinationNamedPort != "":
			name := p.DestinationNamedPort
			out = append(out, anpv1alpha1.AdminNetworkPolicyPort{NamedPort: &name})
		}
	}
	return &out
}

// AdminTier returns the admin tier's policy objects, AdminNetworkPolicies and Admin-tier
// ClusterNetworkPolicies, in precedence order: by priority; equal priorities, which upstream
// leaves undefined, by name, a ClusterNetworkPolicy before an AdminNetworkPolicy of the same
// name. The compiler and every listing take this one order.
func (c *Cluster) AdminTier() []Object {
	var out []Object
	for _, k := range SortedKeys(c.CNPs) {
		if c.CNPs[k].Spec.Tier != cnpv1alpha2.BaselineTier {
			out = append(out, Object{Kind: KindCNP, Obj: c.CNPs[k]})
		}
	}
	for _, k := range SortedKeys(c.ANPs) {
		out = append(out, Object{Kind: KindANP, Obj: c.ANPs[k]})
	}
	byPriority(out)
	return out
}

// BaselineTier returns the baseline tier's policy objects in precedence order: Baseline-tier
// ClusterNetworkPolicies by priority (then name), then the BaselineAdminNetworkPolicy, which
// has no priority and so comes last.
func (c *Cluster) BaselineTier() []Object {
	var out []Object
	for _, k := range SortedKeys(c.CNPs) {
		if c.CNPs[k].Spec.Tier == cnpv1alpha2.BaselineTier {
			out = append(out, Object{Kind: KindCNP, Obj: c.CNPs[k]})
		}
	}
	byPriority(out)
	for _, k := range SortedKeys(c.BANPs) {
		out = append(out, Object{Kind: KindBANP, Obj: c.BANPs[k]})
	}
	return out
}

// Priority returns an admin or baseline policy's spec.priority; ok is false for kinds without
// one (the BaselineAdminNetworkPolicy).
func Priority(obj any) (prio int32, ok bool) {
	switch o := obj.(type) {
	case *anpv1alpha1.AdminNetworkPolicy:
		return o.Spec.Priority, true
	case *cnpv1alpha2.ClusterNetworkPolicy:
		return o.Spec.Priority, true
	}
	return 0, false
}

// byPriority orders objects by priority, then name; the sort is stable, so objects of one
// name keep their order.
func byPriority(objs []Object) {
	sort.SliceStable(objs, func(i, j int) bool {
		pi, _ := Priority(objs[i].Obj)
		pj, _ := Priority(objs[j].Obj)
		if pi != pj {
			return pi < pj
		}
		return objs[i].Meta().Name < objs[j].Meta().Name
	})
}
