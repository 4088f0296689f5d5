package model

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
)

// NamespaceNameLabel is set on every Namespace by the API server (and by us) to its name.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// setDefaults applies the defaults the API server applies on create.
func setDefaults(o Object) {
	switch obj := o.Obj.(type) {
	case *corev1.Namespace:
		if obj.Labels == nil {
			obj.Labels = map[string]string{}
		}
		obj.Labels[NamespaceNameLabel] = obj.Name
	case *corev1.Pod:
		defaultPod(obj)
	case *ThreatDefense:
		defaultThreatDefense(obj)
	case *corev1.Service:
		if obj.Spec.Type == "" {
			obj.Spec.Type = corev1.ServiceTypeClusterIP
		}
		for i := range obj.Spec.Ports {
			p := &obj.Spec.Ports[i]
			if p.Protocol == "" {
				p.Protocol = corev1.ProtocolTCP
			}
			if p.TargetPort == (intstr.IntOrString{}) {
				p.TargetPort = intstr.FromInt32(p.Port)
			}
		}
		if len(obj.Spec.ClusterIPs) == 0 && obj.Spec.ClusterIP != "" {
			obj.Spec.ClusterIPs = []string{obj.Spec.ClusterIP}
		}
	case *discoveryv1.EndpointSlice:
		for i := range obj.Ports {
			if obj.Ports[i].Protocol == nil {
				tcp := corev1.ProtocolTCP
				obj.Ports[i].Protocol = &tcp
			}
		}
	case *networkingv1.NetworkPolicy:
		defaultNetworkPolicy(&obj.Spec)
	case *anpv1alpha1.AdminNetworkPolicy:
		for i := range obj.Spec.Ingress {
			defaultANPPorts(obj.Spec.Ingress[i].Ports)
		}
		for i := range obj.Spec.Egress {
			defaultANPPorts(obj.Spec.Egress[i].Ports)
		}
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		for i := range obj.Spec.Ingress {
			defaultANPPorts(obj.Spec.Ingress[i].Ports)
		}
		for i := range obj.Spec.Egress {
			defaultANPPorts(obj.Spec.Egress[i].Ports)
		}
	}
}

func defaultPod(p *corev1.Pod) {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			for j := range cs[i].Ports {
				if cs[i].Ports[j].Protocol == "" {
					cs[i].Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	}
	// The API server keeps podIP and podIPs[0] equal; accept either one written alone.
	if p.Status.PodIP != "" && len(p.Status.PodIPs) == 0 {
		p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	if p.Status.PodIP == "" && len(p.Status.PodIPs) > 0 {
		p.Status.PodIP = p.Status.PodIPs[0].IP
	}
}

// defaultNetworkPolicy follows k8s.io/kubernetes pkg/apis/networking/v1 defaults: ports default to
// TCP, and absent policyTypes become [Ingress] plus Egress when egress rules exist.
func defaultNetworkPolicy(spec *networkingv1.NetworkPolicySpec) {
	tcp := corev1.ProtocolTCP
	for i := range spec.Ingress {
		for j := range spec.Ingress[i].Ports {
			if spec.Ingress[i].Ports[j].Protocol == nil {
				spec.Ingress[i].Ports[j].Protocol = &tcp
			}
		}
	}
	for i := range spec.Egress {
		for j := range spec.Egress[i].Ports {
			if spec.Egress[i].Ports[j].Protocol == nil {
				spec.Egress[i].Ports[j].Protocol = &tcp
			}
		}
	}
	if len(spec.PolicyTypes) == 0 {
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(spec.Egress) > 0 {
			spec.PolicyTypes = append(spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
}

func defaultANPPorts(ports *[]anpv1alpha1.AdminNetworkPolicyPort) {
	if ports == nil {
		return
	}
	for i := range *ports {
		p := &(*ports)[i]
		if p.PortNumber != nil && p.PortNumber.Protocol == "" {
			p.PortNumber.Protocol = corev1.ProtocolTCP
		}
		if p.PortRange != nil && p.PortRange.Protocol == "" {
			p.PortRange.Protocol = corev1.ProtocolTCP
		}
	}
}
