package model

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

var supportedProtocols = []string{string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP)}

// validate checks one defaulted object as the API server would (for CRDs, as their OpenAPI
// schema and CEL rules would), plus the checks an implementation needs to act on it (label
// selectors that parse, CIDRs that parse).
func validate(o Object) field.ErrorList {
	errs := append(validateMeta(o), validateStaged(o)...)
	switch obj := o.Obj.(type) {
	case *corev1.Node:
		for i, a := range obj.Status.Addresses {
			if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
				errs = append(errs, validateIP(field.NewPath("status", "addresses").Index(i).Child("address"), a.Address)...)
			}
		}
		if obj.Spec.PodCIDR != "" {
			errs = append(errs, validateCIDR(field.NewPath("spec", "podCIDR"), obj.Spec.PodCIDR)...)
		}
	case *corev1.Pod:
		errs = append(errs, validatePod(obj)...)
	case *corev1.Service:
		errs = append(errs, validateService(obj)...)
	case *discoveryv1.EndpointSlice:
		errs = append(errs, validateEndpointSlice(obj)...)
	case *networkingv1.NetworkPolicy:
		errs = append(errs, validateNetworkPolicy(&obj.Spec)...)
	case *ThreatDefense:
		errs = append(errs, validateThreatDefense(obj)...)
	default:
		errs = append(errs, validateAdminPolicy(o)...)
	}
	return errs
}

func validateMeta(o Object) field.ErrorList {
	m := o.Meta()
	p := field.NewPath("metadata")
	var errs field.ErrorList
	if m.Name == "" {
		if m.GenerateName != "" {
			return append(errs, field.Required(p.Child("name"), "generateName is not supported: give the object a name"))
		}
		return append(errs, field.Required(p.Child("name"), "name or generateName is required"))
	}
	var msgs []string
	switch o.Kind {
	case KindNamespace:
		msgs = validation.IsDNS1123Label(m.Name)
	case KindService:
		msgs = validation.IsDNS1035Label(m.Name)
	default:
		msgs = validation.IsDNS1123Subdomain(m.Name)
	}
	for _, msg := range msgs {
		errs = append(errs, field.Invalid(p.Child("name"), m.Name, msg))
	}
	if m.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(m.Namespace) {
			errs = append(errs, field.Invalid(p.Child("namespace"), m.Namespace, msg))
		}
	}
	errs = append(errs, metav1validation.ValidateLabels(m.Labels, p.Child("labels"))...)
	return errs
}

func validatePod(pod *corev1.Pod) field.ErrorList {
	errs := validateQuarantine(pod)
	names := map[string]bool{}
	check := func(p *field.Path, cs []corev1.Container) {
		for i, c := range cs {
			for j, port := range c.Ports {
				pp := p.Index(i).Child("ports").Index(j)
				if port.Name != "" {
					for _, msg := range validation.IsValidPortName(port.Name) {
						errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
					}
					if names[port.Name] {
						errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
					}
					names[port.Name] = true
				}
				for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
					errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
				}
				errs = append(errs, validateProtocol(pp.Child("protocol"), port.Protocol)...)
			}
		}
	}
	check(field.NewPath("spec", "initContainers"), pod.Spec.InitContainers)
	check(field.NewPath("spec", "containers"), pod.Spec.Containers)
	if pod.Status.PodIP != "" {
		errs = append(errs, validateIP(field.NewPath("status", "podIP"), pod.Status.PodIP)...)
	}
	for i, ip := range pod.Status.PodIPs {
		errs = append(errs, validateIP(field.NewPath("status", "podIPs").Index(i).Child("ip"), ip.IP)...)
	}
	if len(pod.Status.PodIPs) > 0 && pod.Status.PodIP != pod.Status.PodIPs[0].IP {
		errs = append(errs, field.Invalid(field.NewPath("status", "podIPs").Index(0).Child("ip"), pod.Status.PodIPs[0].IP, "must equal status.podIP"))
	}
	return errs
}

func validateService(svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	names := map[string]bool{}
	for i, port := range svc.Spec.Ports {
		pp := p.Child("ports").Index(i)
		if len(svc.Spec.Ports) > 1 && port.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "required when there is more than one port"))
		}
		if port.Name != "" {
			for _, msg := range validation.IsDNS1123Label(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if names[port.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names[port.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, msg))
		}
		errs = append(errs, validateProtocol(pp.Child("protocol"), port.Protocol)...)
		errs = append(errs, validatePortRef(pp.Child("targetPort"), port.TargetPort)...)
	}
	for i, ip := range svc.Spec.ClusterIPs {
		if ip != corev1.ClusterIPNone {
			errs = append(errs, validateIP(p.Child("clusterIPs").Index(i), ip)...)
		}
	}
	errs = append(errs, metav1validation.ValidateLabels(svc.Spec.Selector, p.Child("selector"))...)
	return append(errs, validateServiceExposure(svc)...)
}

// validateServiceExposure checks the fields kube-proxy reads beyond ClusterIPs, as the API
// server does (pkg/apis/core/validation).
func validateServiceExposure(svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		errs = append(errs, field.NotSupported(p.Child("type"), svc.Spec.Type, []string{"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}))
	}
	external := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	nodePorts := map[string]bool{}
	for i, port := range svc.Spec.Ports {
		pp := p.Child("ports").Index(i).Child("nodePort")
		if port.NodePort == 0 {
			continue
		}
		if !external {
			errs = append(errs, field.Forbidden(pp, "may not be used when `type` is '"+string(svc.Spec.Type)+"'"))
			continue
		}
		for _, msg := range validation.IsValidPortNum(int(port.NodePort)) {
			errs = append(errs, field.Invalid(pp, port.NodePort, msg))
		}
		key := fmt.Sprintf("%d/%s", port.NodePort, port.Protocol)
		if nodePorts[key] {
			errs = append(errs, field.Duplicate(pp, port.NodePort))
		}
		nodePorts[key] = true
	}
	for i, ip := range svc.Spec.ExternalIPs {
		errs = append(errs, validateIP(p.Child("externalIPs").Index(i), ip)...)
	}
	switch svc.Spec.ExternalTrafficPolicy {
	case "", corev1.ServiceExternalTrafficPolicyCluster:
	case corev1.ServiceExternalTrafficPolicyLocal:
		if !external && len(svc.Spec.ExternalIPs) == 0 {
			errs = append(errs, field.Invalid(p.Child("externalTrafficPolicy"), svc.Spec.ExternalTrafficPolicy, "may only be set for NodePort or LoadBalancer Services, or with externalIPs"))
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("externalTrafficPolicy"), svc.Spec.ExternalTrafficPolicy, []string{"Cluster", "Local"}))
	}
	if itp := svc.Spec.InternalTrafficPolicy; itp != nil && *itp != corev1.ServiceInternalTrafficPolicyCluster && *itp != corev1.ServiceInternalTrafficPolicyLocal {
		errs = append(errs, field.NotSupported(p.Child("internalTrafficPolicy"), *itp, []string{"Cluster", "Local"}))
	}
	switch svc.Spec.SessionAffinity {
	case "", corev1.ServiceAffinityNone:
		if svc.Spec.SessionAffinityConfig != nil {
			errs = append(errs, field.Forbidden(p.Child("sessionAffinityConfig"), "must not be set when sessionAffinity is None"))
		}
	case corev1.ServiceAffinityClientIP:
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			if t := *c.ClientIP.TimeoutSeconds; t <= 0 || t > maxAffinitySeconds {
				errs = append(errs, field.Invalid(p.Child("sessionAffinityConfig", "clientIP", "timeoutSeconds"), t,
					fmt.Sprintf("must be greater than 0 and less than or equal to %d", maxAffinitySeconds)))
			}
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("sessionAffinity"), svc.Spec.SessionAffinity, []string{"None", "ClientIP"}))
	}
	if hc := svc.Spec.HealthCheckNodePort; hc != 0 {
		for _, msg := range validation.IsValidPortNum(int(hc)) {
			errs = append(errs, field.Invalid(p.Child("healthCheckNodePort"), hc, msg))
		}
	}
	for i, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			errs = append(errs, validateIP(field.NewPath("status", "loadBalancer", "ingress").Index(i).Child("ip"), in.IP)...)
		}
	}
	return errs
}

func validateEndpointSlice(es *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	for i, ep := range es.Endpoints {
		for j, a := range ep.Addresses {
			if es.AddressType != discoveryv1.AddressTypeFQDN {
				errs = append(errs, validateIP(field.NewPath("endpoints").Index(i).Child("addresses").Index(j), a)...)
			}
		}
	}
	for i, port := range es.Ports {
		pp := field.NewPath("ports").Index(i)
		if port.Port != nil {
			for _, msg := range validation.IsValidPortNum(int(*port.Port)) {
				errs = append(errs, field.Invalid(pp.Child("port"), *port.Port, msg))
			}
		}
		errs = append(errs, validateProtocol(pp.Child("protocol"), *port.Protocol)...)
	}
	return errs
}

// validateNetworkPolicy follows k8s.io/kubernetes pkg/apis/networking/validation.
func validateNetworkPolicy(spec *networkingv1.NetworkPolicySpec) field.ErrorList {
	p := field.NewPath("spec")
	errs := validateSelector(&spec.PodSelector, p.Child("podSelector"))
	for i, rule := range spec.Ingress {
		rp := p.Child("ingress").Index(i)
		for j := range rule.Ports {
			errs = append(errs, validateNPPort(&rule.Ports[j], rp.Child("ports").Index(j))...)
		}
		for j := range rule.From {
			errs = append(errs, validateNPPeer(&rule.From[j], rp.Child("from").Index(j))...)
		}
	}
	for i, rule := range spec.Egress {
		rp := p.Child("egress").Index(i)
		for j := range rule.Ports {
			errs = append(errs, validateNPPort(&rule.Ports[j], rp.Child("ports").Index(j))...)
		}
		for j := range rule.To {
			errs = append(errs, validateNPPeer(&rule.To[j], rp.Child("to").Index(j))...)
		}
	}
	if len(spec.PolicyTypes) > 2 {
		errs = append(errs, field.Invalid(p.Child("policyTypes"), spec.PolicyTypes, "may not specify more than two policyTypes"))
	}
	seen := map[networkingv1.PolicyType]bool{}
	for i, t := range spec.PolicyTypes {
		tp := p.Child("policyTypes").Index(i)
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(tp, t, []string{"Ingress", "Egress"}))
		} else if seen[t] {
			errs = append(errs, field.Duplicate(tp, t))
		}
		seen[t] = true
	}
	return errs
}

func validateNPPort(port *networkingv1.NetworkPolicyPort, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if port.Protocol != nil {
		errs = append(errs, validateProtocol(p.Child("protocol"), *port.Protocol)...)
	}
	switch {
	case port.Port == nil:
		if port.EndPort != nil {
			errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, "may not be specified when `port` is not specified"))
		}
	case port.Port.Type == intstr.Int:
		for _, msg := range validation.IsValidPortNum(int(port.Port.IntVal)) {
			errs = append(errs, field.Invalid(p.Child("port"), port.Port.IntVal, msg))
		}
		if port.EndPort != nil {
			if *port.EndPort < port.Port.IntVal {
				errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, "must be greater than or equal to `port`"))
			}
			for _, msg := range validation.IsValidPortNum(int(*port.EndPort)) {
				errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, msg))
			}
		}
	default:
		if port.EndPort != nil {
			errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, "may not be specified when `port` is non-numeric"))
		}
		for _, msg := range validation.IsValidPortName(port.Port.StrVal) {
			errs = append(errs, field.Invalid(p.Child("port"), port.Port.StrVal, msg))
		}
	}
	return errs
}

func validateNPPeer(peer *networkingv1.NetworkPolicyPeer, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if peer.PodSelector != nil {
		n++
		errs = append(errs, validateSelector(peer.PodSelector, p.Child("podSelector"))...)
	}
	if peer.NamespaceSelector != nil {
		n++
		errs = append(errs, validateSelector(peer.NamespaceSelector, p.Child("namespaceSelector"))...)
	}
	if peer.IPBlock != nil {
		n++
		errs = append(errs, validateIPBlock(peer.IPBlock, p.Child("ipBlock"))...)
	}
	if n == 0 {
		errs = append(errs, field.Required(p, "must specify a peer"))
	} else if n > 1 && peer.IPBlock != nil {
		errs = append(errs, field.Forbidden(p, "may not specify both ipBlock and another peer"))
	}
	return errs
}

// validateIPBlock: every except must be a strict subset of cidr, so except == cidr is invalid.
func validateIPBlock(b *networkingv1.IPBlock, p *field.Path) field.ErrorList {
	if b.CIDR == "" {
		return field.ErrorList{field.Required(p.Child("cidr"), "")}
	}
	errs := validateCIDR(p.Child("cidr"), b.CIDR)
	cidr, err := ParseCIDR(b.CIDR)
	if err != nil {
		return errs
	}
	for i, s := range b.Except {
		ep := p.Child("except").Index(i)
		ex, err := ParseCIDR(s)
		if err != nil {
			errs = append(errs, field.Invalid(ep, s, err.Error()))
			continue
		}
		if !cidr.Contains(ex.Addr()) || ex.Bits() <= cidr.Bits() {
			errs = append(errs, field.Invalid(ep, s, "must be a strict subset of `cidr`"))
		}
	}
	return errs
}

func validateSelector(s *metav1.LabelSelector, p *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, p)
	if len(errs) == 0 {
		if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
			errs = append(errs, field.Invalid(p, s, err.Error()))
		}
	}
	return errs
}

func validateProtocol(p *field.Path, proto corev1.Protocol) field.ErrorList {
	for _, s := range supportedProtocols {
		if string(proto) == s {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(p, proto, supportedProtocols)}
}

func validatePortRef(p *field.Path, port intstr.IntOrString) field.ErrorList {
	var errs field.ErrorList
	if port.Type == intstr.Int {
		for _, msg := range validation.IsValidPortNum(int(port.IntVal)) {
			errs = append(errs, field.Invalid(p, port.IntVal, msg))
		}
		return errs
	}
	for _, msg := range validation.IsValidPortName(port.StrVal) {
		errs = append(errs, field.Invalid(p, port.StrVal, msg))
	}
	return errs
}

func validateIP(p *field.Path, s string) field.ErrorList {
	if _, err := ParseIP(s); err != nil {
		return field.ErrorList{field.Invalid(p, s, err.Error())}
	}
	return nil
}

func validateCIDR(p *field.Path, s string) field.ErrorList {
	if _, err := ParseCIDR(s); err != nil {
		return field.ErrorList{field.Invalid(p, s, err.Error())}
	}
	return nil
}

// ParseIP parses an IPv4 or IPv6 address (no zone), returning IPv4 in its 4-byte form.
func ParseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)")
	}
	return a.Unmap(), nil
}

// ParseCIDR parses a CIDR and masks host bits, as the API server's (sloppy) parser accepts
// "10.0.0.1/24" and means 10.0.0.0/24.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || p.Addr().Zone() != "" || s != strings.TrimSpace(s) {
		return netip.Prefix{}, fmt.Errorf("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		if p.Bits() < 0 {
			return netip.Prefix{}, fmt.Errorf("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
		}
	}
	return p.Masked(), nil
}

// maxAffinitySeconds is the API server's bound on sessionAffinityConfig.clientIP.timeoutSeconds
// (one day).
const maxAffinitySeconds = 86400
