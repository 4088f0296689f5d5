package compile

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// services resolves every Service port to its backends: ready pods chosen by the selector
// (targetPort by number, or by name on each pod), or, for Services without a selector, the
// ready endpoints of their EndpointSlices.
func (k *compiler) services() {
	for _, key := range model.SortedKeys(k.c.Services) {
		svc := k.c.Services[key]
		s := ir.Service{Namespace: svc.Namespace, Name: svc.Name}
		for _, c := range svc.Spec.ClusterIPs {
			if ip, err := model.ParseIP(c); err == nil {
				s.ClusterIPs = append(s.ClusterIPs, ip)
			}
		}
		for _, sp := range svc.Spec.Ports {
			proto, _ := ir.ParseProtocol(string(sp.Protocol))
			port := ir.ServicePort{Name: sp.Name, Port: uint16(sp.Port), Protocol: proto}
			if len(svc.Spec.Selector) > 0 {
				port.Backends = k.selectorBackends(svc, sp, proto)
			} else {
				port.Backends = k.sliceBackends(svc, sp, proto)
			}
			s.Ports = append(s.Ports, port)
		}
		k.rs.Services = append(k.rs.Services, s)
	}
}

func (k *compiler) selectorBackends(svc *corev1.Service, sp corev1.ServicePort, proto ir.Protocol) []ir.Backend {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []ir.Backend
	for i := range k.rs.Pods {
		p := &k.rs.Pods[i]
		src := k.c.Pods[p.Key()]
		if p.Namespace != svc.Namespace || !sel.Matches(k.podLbl[i]) || len(p.IPs) == 0 || !podReady(src) {
			continue
		}
		target, ok := uint16(0), false
		if sp.TargetPort.Type == intstr.Int {
			target, ok = uint16(sp.TargetPort.IntVal), true
		} else {
			for _, cp := range p.Ports {
				if cp.Name == sp.TargetPort.StrVal && cp.Protocol == proto {
					target, ok = cp.Port, true
				}
			}
		}
		if ok {
			out = append(out, ir.Backend{Pod: p.ID, IP: p.IP(), Port: target})
		}
	}
	return out
}

// podReady: a pod that has finished is never a backend; one whose status reports a Ready
// condition must have it True; a pod without conditions (hand-written manifests) counts as ready.
func podReady(p *model.Pod) bool {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return true
}

func (k *compiler) sliceBackends(svc *corev1.Service, sp corev1.ServicePort, proto ir.Protocol) []ir.Backend {
	var out []ir.Backend
	for _, key := range model.SortedKeys(k.c.EndpointSlices) {
		es := k.c.EndpointSlices[key]
		if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name || es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, ep := range es.Ports {
			if ep.Port == nil || string(*ep.Protocol) != proto.String() || (ep.Name != nil && *ep.Name != sp.Name) || (ep.Name == nil && sp.Name != "") {
				continue
			}
			for _, e := range es.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				pod := ir.PodID(-1)
				if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
					if p := k.rs.PodByKey(e.TargetRef.Namespace + "/" + e.TargetRef.Name); p != nil {
						pod = p.ID
					}
				}
				for _, a := range e.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						out = append(out, ir.Backend{Pod: pod, IP: ip.Unmap(), Port: uint16(*ep.Port)})
					}
				}
			}
		}
	}
	return out
}
