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

// Addressing of a lab. Node i (0-based) gets FabricBase+10+i and pod CIDR 10.244.(i+1).0/24.
var (
	FabricPrefix = netip.MustParsePrefix("172.30.0.0/24")
	ServiceCIDR  = netip.MustParsePrefix("10.96.0.0/16")
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
	next := ServiceCIDR.Addr().Next()
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
	return nil
}
