// Package controller runs a lab cluster from Kubernetes objects: it places pods on lab nodes,
// assigns addresses, keeps the cluster's objects as state between CLI invocations, drives the
// network-namespace machinery of package fabric, and runs one node agent (package agent, the
// code a real node runs) per lab node over the lab's store, waiting for each change to be in
// force on every node.
package controller

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/rampart-sec/rampart/internal/model"
)

// Addressing of a lab. Node i (0-based) gets FabricBase+10+i and pod CIDR 10.244.(i+1).0/24;
// the external client (a namespace on the nodes' uplink network, like a machine outside the
// cluster) has ExternalClient; LoadBalancer Services get addresses from LoadBalancerCIDR, which
// the external client routes to a node as a cloud's load balancer would send it there.
var (
	FabricPrefix     = netip.MustParsePrefix("172.30.0.0/24")
	ServiceCIDR      = netip.MustParsePrefix("10.96.0.0/16")
	LoadBalancerCIDR = netip.MustParsePrefix("172.30.1.0/24")
	ExternalClient   = netip.MustParseAddr("172.30.0.250")
	// NodePortRange is the API server's default --service-node-port-range.
	NodePortFirst, NodePortLast = 30000, 32767
)

// NodeCIDR returns node i's pod CIDR.
func NodeCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24)
}

// NodeIP returns node i's address on the fabric.
func NodeIP(i int) netip.Addr {
	b := FabricPrefix.Addr().As4()
	b[3] = byte(10 + i)
	return netip.AddrFrom4(b)
}

// Place makes the cluster's objects describe the lab: it ensures at least n Node objects (keeping
// declared ones and their labels, giving each the lab's address, pod CIDR and standard labels),
// puts each pod on a node (its spec.nodeName when that is a lab node, otherwise round-robin),
// gives pods addresses (keeping a declared status.podIP that is free and outside the service and
// fabric ranges) and gives Services without one a ClusterIP. Objects already placed keep their
// placement, so applying changes never moves a running pod.
func Place(c *model.Cluster, n int) error {
	if n < 1 || n > 200 {
		return fmt.Errorf("a lab has 1 to 200 nodes, not %d", n)
	}
	names := model.SortedKeys(c.Nodes)
	for i := len(names); len(names) < n; i++ {
		name := fmt.Sprintf("node-%d", i+1)
		if _, ok := c.Nodes[name]; !ok {
			c.Nodes[name] = &corev1.Node{}
			c.Nodes[name].Name = name
			names = append(names, name)
		}
	}
	// Declared nodes beyond n are kept: manifests that name their nodes get all of them.
	sort.Strings(names)
	index := map[string]int{}
	for i, name := range names {
		index[name] = i
		node := c.Nodes[name]
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		node.Labels["kubernetes.io/hostname"] = name
		node.Labels["kubernetes.io/os"] = "linux"
		node.Spec.PodCIDR = NodeCIDR(i).String()
		node.Spec.PodCIDRs = []string{node.Spec.PodCIDR}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: NodeIP(i).String()}, {Type: corev1.NodeHostName, Address: name}}
	}

	used := map[netip.Addr]string{}
	for i := range names {
		used[NodeIP(i)] = "node " + names[i]
	}
	keys := model.SortedKeys(c.Pods)
	// Pods already placed (from state) keep their addresses; claim them first.
	for _, k := range keys {
		p := c.Pods[k]
		if _, ok := index[p.Spec.NodeName]; ok && p.Status.PodIP != "" && !p.Spec.HostNetwork {
			if ip, err := model.ParseIP(p.Status.PodIP); err == nil && used[ip] == "" && usable(ip) {
				used[ip] = "pod " + k
			}
		}
	}
	next := 0
	for _, k := range keys {
		p := c.Pods[k]
		if _, ok := index[p.Spec.NodeName]; !ok {
			p.Spec.NodeName = names[next%len(names)]
			next++
		}
		i := index[p.Spec.NodeName]
		if p.Spec.HostNetwork {
			setPodIP(p, NodeIP(i))
			continue
		}
		if ip, err := model.ParseIP(p.Status.PodIP); err == nil && used[ip] == "pod "+k {
			continue
		} else if err == nil && used[ip] == "" && usable(ip) {
			used[ip] = "pod " + k
			continue
		}
		ip, err := freeIP(NodeCIDR(i), used)
		if err != nil {
			return fmt.Errorf("pod %s: %w", k, err)
		}
		used[ip] = "pod " + k
		setPodIP(p, ip)
	}
	return placeServices(c)
}

// usable reports whether a declared pod address can be routed in the lab.
func usable(ip netip.Addr) bool {
	return ip.Is4() && !ServiceCIDR.Contains(ip) && !FabricPrefix.Contains(ip) && !ip.IsLoopback() && !ip.IsMulticast() && !ip.IsUnspecified()
}

func setPodIP(p *model.Pod, ip netip.Addr) {
	p.Status.PodIP = ip.String()
	p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
	if p.Status.Phase == "" {
		p.Status.Phase = corev1.PodRunning
	}
}

func freeIP(cidr netip.Prefix, used map[netip.Addr]string) (netip.Addr, error) {
	for ip := cidr.Addr().Next().Next(); cidr.Contains(ip); ip = ip.Next() {
		if ip.As4()[3] < 10 || ip.As4()[3] == 255 {
			continue
		}
		if used[ip] == "" {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address in %s", cidr)
}

func placeServices(c *model.Cluster) error {
	used := map[netip.Addr]bool{}
	keys := model.SortedKeys(c.Services)
	for _, k := range keys {
		s := c.Services[k]
		if ip, err := model.ParseIP(s.Spec.ClusterIP); err == nil {
			if used[ip] {
				return fmt.Errorf("service %s: clusterIP %s is already in use", k, ip)
			}
			used[ip] = true
		}
	}
	// From the range's second address: the first is the API server's own Service (default/
	// kubernetes), which a --kube lab's API server allocates before any of the lab's.
	next := ServiceCIDR.Addr().Next().Next()
	for _, k := range keys {
		s := c.Services[k]
		if s.Spec.ClusterIP != "" {
			continue
		}
		for used[next] || next.As4()[3] == 0 {
			next = next.Next()
		}
		if !ServiceCIDR.Contains(next) {
			return fmt.Errorf("service %s: no free ClusterIP in %s", k, ServiceCIDR)
		}
		s.Spec.ClusterIP = next.String()
		s.Spec.ClusterIPs = []string{next.String()}
		used[next] = true
	}
	return placeExposure(c, keys)
}

// placeExposure does for NodePort and LoadBalancer Services what the API server and a cloud's
// load-balancer controller do: it allocates node ports (and the health-check node port of
// externalTrafficPolicy Local) that the manifests leave out, and gives LoadBalancer Services
// without an ingress address one from LoadBalancerCIDR. Declared values are kept.
func placeExposure(c *model.Cluster, keys []string) error {
	ports := map[string]string{} // "port/protocol" -> owner
	lbIPs := map[netip.Addr]bool{}
	claim := func(k string, port int32, proto corev1.Protocol) error {
		key := fmt.Sprintf("%d/%s", port, proto)
		if o, ok := ports[key]; ok && o != k {
			return fmt.Errorf("service %s: node port %s is already in use by %s", k, key, o)
		}
		ports[key] = k
		return nil
	}
	for _, k := range keys {
		s := c.Services[k]
		for _, sp := range s.Spec.Ports {
			if sp.NodePort != 0 {
				if err := claim(k, sp.NodePort, sp.Protocol); err != nil {
					return err
				}
			}
		}
		if hc := s.Spec.HealthCheckNodePort; hc != 0 {
			if err := claim(k, hc, corev1.ProtocolTCP); err != nil {
				return err
			}
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if ip, err := model.ParseIP(in.IP); err == nil {
				lbIPs[ip] = true
			}
		}
	}
	free := func(k string, proto corev1.Protocol) (int32, error) {
		for p := int32(NodePortFirst); p <= int32(NodePortLast); p++ {
			if _, ok := ports[fmt.Sprintf("%d/%s", p, proto)]; !ok {
				ports[fmt.Sprintf("%d/%s", p, proto)] = k
				return p, nil
			}
		}
		return 0, fmt.Errorf("service %s: no free node port in %d-%d", k, NodePortFirst, NodePortLast)
	}
	nextLB := LoadBalancerCIDR.Addr().Next()
	for _, k := range keys {
		s := c.Services[k]
		if s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for i := range s.Spec.Ports {
			if sp := &s.Spec.Ports[i]; sp.NodePort == 0 {
				p, err := free(k, sp.Protocol)
				if err != nil {
					return err
				}
				sp.NodePort = p
			}
		}
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		if s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal && s.Spec.HealthCheckNodePort == 0 {
			p, err := free(k, corev1.ProtocolTCP)
			if err != nil {
				return err
			}
			s.Spec.HealthCheckNodePort = p
		}
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			for lbIPs[nextLB] {
				nextLB = nextLB.Next()
			}
			if !LoadBalancerCIDR.Contains(nextLB) || nextLB.As4()[3] == 255 {
				return fmt.Errorf("service %s: no free load-balancer address in %s", k, LoadBalancerCIDR)
			}
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: nextLB.String()}}
			lbIPs[nextLB] = true
		}
	}
	return nil
}
