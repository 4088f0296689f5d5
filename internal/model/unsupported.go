package model

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// No silent gaps: a policy rampart cannot enforce as written is an error wherever it is read
// (cilium #28684, endPort silently ignored, is the failure this prevents). Two cases:
//   - objects of a policy kind or API version rampart does not know (IsPolicyKind): decoding
//     rejects them unless DecodeOptions.SkipUnsupported, and the agent reports those it finds;
//   - fields of known kinds it does not enforce (Unsupported): decoding rejects them unless
//     SkipUnsupported, and the compiler then fails closed, as upstream asks implementations to
//     do for a peer they do not understand: an Accept rule matches nothing, a Deny or Pass rule
//     denies every peer on its ports.

// policyGroups are API groups whose kinds with "Policy" in the name are network policies.
var policyGroups = map[string]bool{
	"networking.k8s.io": true, "policy.networking.k8s.io": true, "cilium.io": true,
	"projectcalico.org": true, "crd.projectcalico.org": true, "crd.antrea.io": true,
	"security.antrea.io": true, "k8s.ovn.org": true, "network.openshift.io": true,
	"k8s.cni.cncf.io": true, "networking.gke.io": true,
}

// IsPolicyKind reports whether an object of apiVersion and kind is a network policy, whether
// or not rampart enforces it: every kind of policy.networking.k8s.io, any kind named
// *NetworkPolicy* (CiliumNetworkPolicy, Calico's GlobalNetworkPolicy, Antrea's
// ClusterNetworkPolicy, MultiNetworkPolicy, a NetworkPolicy of an old API version ...), and
// the *Policy* kinds of the network plugins' groups (OVN-Kubernetes' EgressFirewall too).
func IsPolicyKind(apiVersion, kind string) bool {
	gv, err := schema.ParseGroupVersion(apiVersion)
	group := gv.Group
	if err != nil {
		group, _, _ = strings.Cut(apiVersion, "/")
	}
	switch {
	case group == "policy.networking.k8s.io", strings.Contains(kind, "NetworkPolicy"):
		return true
	case policyGroups[group] && (strings.Contains(kind, "Policy") || kind == "EgressFirewall"):
		return true
	}
	return false
}

// Gap is something a policy object says that rampart does not enforce as written.
type Gap struct {
	// APIVersion is set for kinds rampart does not model ("cilium.io/v2").
	APIVersion string
	Kind, Name string // the object
	Namespace  string // a namespaced object's
	Field      string // the field path, "" for the whole object
	Msg        string // what is not enforced and what rampart does instead
}

func (g Gap) String() string {
	s := g.Kind
	if g.APIVersion != "" {
		s = g.APIVersion + " " + s
	}
	if g.Namespace != "" {
		s += " " + g.Namespace + "/" + g.Name
	} else if g.Name != "" {
		s += " " + g.Name
	}
	if g.Field != "" {
		s += ": " + g.Field
	}
	return s + ": " + g.Msg
}

const domainNamesGap = "domainNames peers are not enforced by rampart (no FQDN policy); the rule is compiled fail-closed: an Accept rule matches nothing, a Deny or Pass rule denies every peer on its ports"

// Unsupported lists the fields of one policy object that rampart does not enforce.
func Unsupported(obj any) []Gap {
	var kind, name string
	switch o := obj.(type) {
	case *anpv1alpha1.AdminNetworkPolicy:
		kind, name = KindANP, o.Name
	case *cnpv1alpha2.ClusterNetworkPolicy:
		kind, name = KindCNP, o.Name
	default:
		return nil
	}
	var gaps []Gap
	_, egress := AdminRules(obj)
	for i, r := range egress {
		for j, p := range r.Peers {
			if p.DomainNames != nil {
				gaps = append(gaps, Gap{Kind: kind, Name: name, Field: fmt.Sprintf("spec.egress[%d].to[%d].domainNames", i, j), Msg: domainNamesGap})
			}
		}
	}
	return gaps
}

// Unsupported lists what the cluster's policies say that rampart does not enforce, in a
// stable order (by kind, then name).
func (c *Cluster) Unsupported() []Gap {
	var gaps []Gap
	for _, k := range SortedKeys(c.ANPs) {
		gaps = append(gaps, Unsupported(c.ANPs[k])...)
	}
	for _, k := range SortedKeys(c.CNPs) {
		gaps = append(gaps, Unsupported(c.CNPs[k])...)
	}
	return gaps
}
