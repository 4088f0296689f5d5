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
	// Each Service's EndpointSlices, in name order: looked up per Service port (a scan of
	// every slice per port was quadratic in the Services of a cluster of selector-less ones).
	k.slices = map[string][]*discoveryv1.EndpointSlice{}
	for _, key := range model.SortedKeys(k.c.EndpointSlices) {
		es := k.c.EndpointSlices[key]
		if es.AddressType != discoveryv1.AddressTypeFQDN {
			svc := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
			k.slices[svc] = append(k.slices[svc], es)
		}
	}
	for _, key := range model.SortedKeys(k.c.Services) {
		svc := k.c.Services[key]
		s := ir.Service{Namespace: svc.Namespace, Name: svc.Name}
		for _, c := range svc.Spec.ClusterIPs {
			if ip, err := model.ParseIP(c); err == nil {
				s.ClusterIPs = append(s.ClusterIPs, ip)
			}
		}
		external := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
		if svc.Spec.Type != corev1.ServiceTypeExternalName {
			s.ExternalIPs = parseIPs(svc.Spec.ExternalIPs)
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			for _, in := range svc.Status.LoadBalancer.Ingress {
				// An ingress reached through a proxy (ipMode Proxy) is not the node's to translate.
				if in.IPMode == nil || *in.IPMode == corev1.LoadBalancerIPModeVIP {
					s.LoadBalancerIPs = append(s.LoadBalancerIPs, parseIPs([]string{in.IP})...)
				}
			}
		}
		s.ExternalLocal = svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
			(external || len(s.ExternalIPs) > 0)
		s.InternalLocal = svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			s.AffinitySeconds = uint32(corev1.DefaultClientIPServiceAffinitySeconds)
			if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				s.AffinitySeconds = uint32(*c.ClientIP.TimeoutSeconds)
			}
		}
		if s.ExternalLocal && svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			s.HealthCheckNodePort = uint16(svc.Spec.HealthCheckNodePort)
		}
		for _, sp := range svc.Spec.Ports {
			proto, _ := ir.ParseProtocol(string(sp.Protocol))
			port := ir.ServicePort{Name: sp.Name, Port: uint16(sp.Port), Protocol: proto}
			if external {
				port.NodePort = uint16(sp.NodePort)
			}
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
		if p.Namespace != svc.Namespace || !sel.Matches(k.podLbl[i]) || len(p.IPs) == 0 {
			continue
		}
		ready, terminating := podServing(src)
		if !ready {
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
			out = append(out, ir.Backend{Pod: p.ID, IP: p.IP(), Port: target, Node: p.Node, Terminating: terminating})
		}
	}
	k.hint(svc, out)
	return out
}

// hint gives a selector Service's backends their topology hints: those of the Service's
// EndpointSlices where a controller wrote them (a cluster), otherwise, for a Service asking for
// a traffic distribution, the ones the EndpointSlice controller would write (the lab has no
// controller): each endpoint hinted for its node's zone (and, for PreferSameNode, its node),
// none when an endpoint's node has no zone.
func (k *compiler) hint(svc *corev1.Service, bs []ir.Backend) {
	if len(bs) == 0 {
		return
	}
	if hs := k.slices[svc.Namespace+"/"+svc.Name]; hinted(hs) {
		type hints struct{ zones, nodes []string }
		byIP := map[netip.Addr]hints{}
		for _, es := range hs {
			for i := range es.Endpoints {
				zones, nodes := hintsOf(&es.Endpoints[i])
				for _, a := range es.Endpoints[i].Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						byIP[ip.Unmap()] = hints{zones, nodes}
					}
				}
			}
		}
		for i := range bs {
			h := byIP[bs[i].IP]
			bs[i].ZoneHints, bs[i].NodeHints = h.zones, h.nodes
		}
		return
	}
	td := ""
	if svc.Spec.TrafficDistribution != nil {
		td = *svc.Spec.TrafficDistribution
	}
	if td != corev1.ServiceTrafficDistributionPreferClose && td != corev1.ServiceTrafficDistributionPreferSameZone && td != corev1.ServiceTrafficDistributionPreferSameNode {
		return
	}
	for i := range bs {
		if bs[i].Node == "" || k.nodeLbl[bs[i].Node][corev1.LabelTopologyZone] == "" {
			for j := range bs {
				bs[j].ZoneHints, bs[j].NodeHints = nil, nil
			}
			return
		}
		bs[i].ZoneHints = []string{k.nodeLbl[bs[i].Node][corev1.LabelTopologyZone]}
		if td == corev1.ServiceTrafficDistributionPreferSameNode {
			bs[i].NodeHints = []string{bs[i].Node}
		}
	}
}

// hinted reports whether a controller wrote topology hints into any of slices.
func hinted(slices []*discoveryv1.EndpointSlice) bool {
	for _, es := range slices {
		for i := range es.Endpoints {
			if h := es.Endpoints[i].Hints; h != nil && (len(h.ForZones) > 0 || len(h.ForNodes) > 0) {
				return true
			}
		}
	}
	return false
}

// hintsOf reads an endpoint's topology hints.
func hintsOf(e *discoveryv1.Endpoint) (zones, nodes []string) {
	if e.Hints == nil {
		return nil, nil
	}
	for _, z := range e.Hints.ForZones {
		zones = append(zones, z.Name)
	}
	for _, n := range e.Hints.ForNodes {
		nodes = append(nodes, n.Name)
	}
	return zones, nodes
}

// podServing: a pod that has finished is never a backend; one whose status reports a Ready
// condition must have it True (a pod without conditions, from a hand-written manifest, counts
// as ready). A serving pod being deleted is terminating: a backend only where no other is
// ready, as the EndpointSlice controller's serving and terminating conditions make it.
func podServing(p *model.Pod) (serving, terminating bool) {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false, false
	}
	serving = true
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			serving = c.Status == corev1.ConditionTrue
		}
	}
	return serving, p.DeletionTimestamp != nil
}

func parseIPs(in []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		if ip, err := model.ParseIP(s); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

func (k *compiler) sliceBackends(svc *corev1.Service, sp corev1.ServicePort, proto ir.Protocol) []ir.Backend {
	var out []ir.Backend
	for _, es := range k.slices[svc.Namespace+"/"+svc.Name] {
		for _, ep := range es.Ports {
			if ep.Port == nil || string(*ep.Protocol) != proto.String() || (ep.Name != nil && *ep.Name != sp.Name) || (ep.Name == nil && sp.Name != "") {
				continue
			}
			for _, e := range es.Endpoints {
				// Ready unset means ready; a terminating endpoint is used only while serving.
				terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
				ready := e.Conditions.Ready == nil || *e.Conditions.Ready
				if terminating {
					ready = e.Conditions.Serving == nil || *e.Conditions.Serving
				}
				if !ready {
					continue
				}
				node := ""
				if e.NodeName != nil {
					node = *e.NodeName
				}
				pod := ir.PodID(-1)
				if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
					if p := k.rs.PodByKey(e.TargetRef.Namespace + "/" + e.TargetRef.Name); p != nil {
						pod = p.ID
						if node == "" {
							node = p.Node
						}
					}
				}
				zones, nodes := hintsOf(&e)
				for _, a := range e.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						out = append(out, ir.Backend{Pod: pod, IP: ip.Unmap(), Port: uint16(*ep.Port), Node: node, Terminating: terminating, ZoneHints: zones, NodeHints: nodes})
					}
				}
			}
		}
	}
	return out
}
