package model

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// Limits from the network-policy-api CRD schema.
const (
	maxANPPriority = 1000
	maxRules       = 100
	maxPeers       = 100
	maxPorts       = 100
	maxNetworks    = 25
	maxRuleNameLen = 100
	banpOnlyName   = "default"
	actionAllow    = anpv1alpha1.AdminNetworkPolicyRuleActionAllow
	actionDeny     = anpv1alpha1.AdminNetworkPolicyRuleActionDeny
	actionPass     = anpv1alpha1.AdminNetworkPolicyRuleActionPass
	baselineAllow  = anpv1alpha1.BaselineAdminNetworkPolicyRuleActionAllow
	baselineDeny   = anpv1alpha1.BaselineAdminNetworkPolicyRuleActionDeny
)

func validateAdminPolicy(o Object) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	var subject anpv1alpha1.AdminNetworkPolicySubject
	var actions []string
	switch obj := o.Obj.(type) {
	case *anpv1alpha1.AdminNetworkPolicy:
		if obj.Spec.Priority < 0 || obj.Spec.Priority > maxANPPriority {
			errs = append(errs, field.Invalid(p.Child("priority"), obj.Spec.Priority, fmt.Sprintf("must be between 0 and %d", maxANPPriority)))
		}
		subject = obj.Spec.Subject
		actions = []string{string(actionAllow), string(actionDeny), string(actionPass)}
	case *cnpv1alpha2.ClusterNetworkPolicy:
		return validateCNP(obj)
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		if obj.Name != banpOnlyName {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), obj.Name, `only one baseline admin network policy, named "default", can exist in a cluster`))
		}
		subject = obj.Spec.Subject
		actions = []string{string(baselineAllow), string(baselineDeny)}
	default:
		return nil
	}
	errs = append(errs, validateSubject(subject, p.Child("subject"))...)
	ingress, egress := AdminRules(o.Obj)
	if len(ingress) > maxRules {
		errs = append(errs, field.TooMany(p.Child("ingress"), len(ingress), maxRules))
	}
	if len(egress) > maxRules {
		errs = append(errs, field.TooMany(p.Child("egress"), len(egress), maxRules))
	}
	for i, r := range ingress {
		errs = append(errs, validateAdminRule(r, actions, false, p.Child("ingress").Index(i))...)
	}
	for i, r := range egress {
		errs = append(errs, validateAdminRule(r, actions, true, p.Child("egress").Index(i))...)
	}
	return errs
}

func validateSubject(s anpv1alpha1.AdminNetworkPolicySubject, p *field.Path) field.ErrorList {
	switch {
	case s.Namespaces != nil && s.Pods != nil:
		return field.ErrorList{field.Invalid(p, "namespaces, pods", "exactly one of namespaces or pods must be set")}
	case s.Namespaces != nil:
		return validateSelector(s.Namespaces, p.Child("namespaces"))
	case s.Pods != nil:
		return append(validateSelector(&s.Pods.NamespaceSelector, p.Child("pods", "namespaceSelector")),
			validateSelector(&s.Pods.PodSelector, p.Child("pods", "podSelector"))...)
	}
	return field.ErrorList{field.Required(p, "exactly one of namespaces or pods must be set")}
}

func validateAdminRule(r AdminRule, actions []string, egress bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(r.Name) > maxRuleNameLen {
		errs = append(errs, field.TooLong(p.Child("name"), r.Name, maxRuleNameLen))
	}
	ok := false
	for _, a := range actions {
		ok = ok || r.Action == a
	}
	if !ok {
		errs = append(errs, field.NotSupported(p.Child("action"), r.Action, actions))
	}
	peersField := "from"
	if egress {
		peersField = "to"
	}
	pp := p.Child(peersField)
	if len(r.Peers) == 0 {
		errs = append(errs, field.Required(pp, "at least one peer is required"))
	}
	if len(r.Peers) > maxPeers {
		errs = append(errs, field.TooMany(pp, len(r.Peers), maxPeers))
	}
	nonPodPeer := false
	for i, peer := range r.Peers {
		errs = append(errs, validateAdminPeer(peer, pp.Index(i))...)
		nonPodPeer = nonPodPeer || peer.Nodes != nil || len(peer.Networks) > 0 || len(peer.DomainNames) > 0
	}
	if r.Ports != nil {
		ports := *r.Ports
		if len(ports) == 0 {
			errs = append(errs, field.Required(p.Child("ports"), "must have at least 1 item when set"))
		}
		if len(ports) > maxPorts {
			errs = append(errs, field.TooMany(p.Child("ports"), len(ports), maxPorts))
		}
		for i, port := range ports {
			pp := p.Child("ports").Index(i)
			errs = append(errs, validateAdminPort(port, pp)...)
			if port.NamedPort != nil && nonPodPeer {
				errs = append(errs, field.Invalid(pp.Child("namedPort"), *port.NamedPort, "networks/nodes peers cannot be combined with namedPort, since there are no named ports for networks or nodes"))
			}
		}
	}
	return errs
}

func validateAdminPeer(peer anpv1alpha1.AdminNetworkPolicyEgressPeer, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if peer.Namespaces != nil {
		n++
		errs = append(errs, validateSelector(peer.Namespaces, p.Child("namespaces"))...)
	}
	if peer.Pods != nil {
		n++
		errs = append(errs, validateSelector(&peer.Pods.NamespaceSelector, p.Child("pods", "namespaceSelector"))...)
		errs = append(errs, validateSelector(&peer.Pods.PodSelector, p.Child("pods", "podSelector"))...)
	}
	if peer.Nodes != nil {
		n++
		errs = append(errs, validateSelector(peer.Nodes, p.Child("nodes"))...)
	}
	if peer.Networks != nil {
		n++
		np := p.Child("networks")
		if len(peer.Networks) == 0 {
			errs = append(errs, field.Required(np, "must have at least 1 item when set"))
		}
		if len(peer.Networks) > maxNetworks {
			errs = append(errs, field.TooMany(np, len(peer.Networks), maxNetworks))
		}
		seen := map[anpv1alpha1.CIDR]bool{}
		for i, c := range peer.Networks {
			errs = append(errs, validateCIDR(np.Index(i), string(c))...)
			if seen[c] {
				errs = append(errs, field.Duplicate(np.Index(i), c))
			}
			seen[c] = true
		}
	}
	if peer.DomainNames != nil {
		n++ // not enforced: Unsupported reports it
	}
	if n != 1 {
		errs = append(errs, field.Invalid(p, n, "exactly one of namespaces, pods, nodes, networks or domainNames must be set"))
	}
	return errs
}

func validateAdminPort(port anpv1alpha1.AdminNetworkPolicyPort, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if port.PortNumber != nil {
		n++
		errs = append(errs, validateProtocol(p.Child("portNumber", "protocol"), port.PortNumber.Protocol)...)
		for _, msg := range validation.IsValidPortNum(int(port.PortNumber.Port)) {
			errs = append(errs, field.Invalid(p.Child("portNumber", "port"), port.PortNumber.Port, msg))
		}
	}
	if port.NamedPort != nil {
		n++
		for _, msg := range validation.IsValidPortName(*port.NamedPort) {
			errs = append(errs, field.Invalid(p.Child("namedPort"), *port.NamedPort, msg))
		}
	}
	if r := port.PortRange; r != nil {
		n++
		errs = append(errs, validateProtocol(p.Child("portRange", "protocol"), r.Protocol)...)
		for _, msg := range validation.IsValidPortNum(int(r.Start)) {
			errs = append(errs, field.Invalid(p.Child("portRange", "start"), r.Start, msg))
		}
		for _, msg := range validation.IsValidPortNum(int(r.End)) {
			errs = append(errs, field.Invalid(p.Child("portRange", "end"), r.End, msg))
		}
		if r.Start > r.End {
			errs = append(errs, field.Invalid(p.Child("portRange", "end"), r.End, "must not be less than start"))
		}
	}
	if n != 1 {
		errs = append(errs, field.Invalid(p, n, "exactly one of portNumber, namedPort or portRange must be set"))
	}
	return errs
}

// AdminRule is an ANP or BANP rule in one shape (ingress peers carry only namespaces/pods).
type AdminRule struct {
	Name   string
	Action string // Allow, Deny, Pass; ClusterNetworkPolicy: Accept, Deny, Pass
	Peers  []anpv1alpha1.AdminNetworkPolicyEgressPeer
	Ports  *[]anpv1alpha1.AdminNetworkPolicyPort
	// DomainNames is set when a peer names domains, which rampart does not enforce: such a
	// rule is compiled fail-closed (see Unsupported).
	DomainNames bool
}

// AdminRules returns the ingress and egress rules of an ANP, BANP or ClusterNetworkPolicy in
// the shared shape.
func AdminRules(obj any) (ingress, egress []AdminRule) {
	in := func(name, action string, from []anpv1alpha1.AdminNetworkPolicyIngressPeer, ports *[]anpv1alpha1.AdminNetworkPolicyPort) AdminRule {
		r := AdminRule{Name: name, Action: action, Ports: ports, Peers: make([]anpv1alpha1.AdminNetworkPolicyEgressPeer, len(from))}
		for i, f := range from {
			r.Peers[i] = anpv1alpha1.AdminNetworkPolicyEgressPeer{Namespaces: f.Namespaces, Pods: f.Pods}
		}
		return r
	}
	switch obj := obj.(type) {
	case *anpv1alpha1.AdminNetworkPolicy:
		for _, r := range obj.Spec.Ingress {
			ingress = append(ingress, in(r.Name, string(r.Action), r.From, r.Ports))
		}
		for _, r := range obj.Spec.Egress {
			rule := AdminRule{Name: r.Name, Action: string(r.Action), Peers: r.To, Ports: r.Ports}
			for _, t := range r.To {
				rule.DomainNames = rule.DomainNames || t.DomainNames != nil
			}
			egress = append(egress, rule)
		}
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		for _, r := range obj.Spec.Ingress {
			ingress = append(ingress, in(r.Name, string(r.Action), r.From, r.Ports))
		}
		for _, r := range obj.Spec.Egress {
			peers := make([]anpv1alpha1.AdminNetworkPolicyEgressPeer, len(r.To))
			for i, t := range r.To {
				peers[i] = anpv1alpha1.AdminNetworkPolicyEgressPeer{Namespaces: t.Namespaces, Pods: t.Pods, Nodes: t.Nodes, Networks: t.Networks}
			}
			egress = append(egress, AdminRule{Name: r.Name, Action: string(r.Action), Peers: peers, Ports: r.Ports})
		}
	case *cnpv1alpha2.ClusterNetworkPolicy:
		return cnpRules(obj)
	}
	return ingress, egress
}
