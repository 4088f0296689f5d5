package ir

import (
	"net/netip"
	"slices"
	"strconv"
)

// Scope says where the traffic a frontend translates comes from.
type Scope uint8

const (
	// FromInside: pods and the nodes themselves.
	FromInside Scope = iota
	// FromOutside: packets arriving on a node's uplink from outside the cluster, for a node
	// port or an external or load-balancer address.
	FromOutside
)

func (s Scope) String() string {
	if s == FromOutside {
		return "outside"
	}
	return "inside"
}

// Frontend is one address and port a node translates to backends, with the backends
// kube-proxy would choose from for that node and that traffic.
type Frontend struct {
	Service *Service
	Port    *ServicePort
	Addr    netip.Addr
	Listen  uint16 // the frontend's port: the Service port, or the node port
	Scope   Scope
	// Local: only the node's own endpoints serve it (internalTrafficPolicy Local, or
	// externalTrafficPolicy Local from outside, where the client also keeps its address).
	Local bool
	// NodePort: the frontend is a node's address and node port (kube-proxy hands node ports
	// to the host when no endpoint serves them; external addresses are dropped).
	NodePort bool
	// Backends are the usable endpoints: empty when none is (the frontend then refuses).
	Backends []Backend
}

// Key names the Service port the frontend belongs to, for rule names and comments.
func (f *Frontend) Key() string {
	return f.Service.Namespace + "/" + f.Service.Name + ":" + f.Port.Protocol.String() + "/" + strconv.Itoa(int(f.Port.Port))
}

// Usable returns the backends kube-proxy sends traffic to, of those keep accepts (nil: all):
// the ready ones, or, when none is ready, the serving ones that are terminating.
func Usable(bs []Backend, keep func(Backend) bool) []Backend {
	var ready, term []Backend
	for _, b := range bs {
		if keep != nil && !keep(b) {
			continue
		}
		if b.Terminating {
			term = append(term, b)
		} else {
			ready = append(ready, b)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return term
}

// hints summarizes the topology hints of bs's ready endpoints for node in zone.
type hints struct {
	ready            bool // some endpoint is ready
	allNode, allZone bool // every ready one carries node (zone) hints
	forNode, forZone bool // a ready one names node (zone)
}

func hintsFor(bs []Backend, node, zone string) hints {
	h := hints{allNode: true, allZone: true}
	for _, b := range bs {
		if b.Terminating {
			continue
		}
		h.ready = true
		h.allNode = h.allNode && len(b.NodeHints) > 0
		h.allZone = h.allZone && len(b.ZoneHints) > 0
		h.forNode = h.forNode || (node != "" && slices.Contains(b.NodeHints, node))
		h.forZone = h.forZone || (zone != "" && slices.Contains(b.ZoneHints, zone))
	}
	return h
}

// Hinted reports whether topology hints may choose among bs on some node: every ready
// endpoint carries zone or node hints (the EndpointSlice controller hints all of a Service's
// endpoints, or none).
func Hinted(bs []Backend) bool {
	h := hintsFor(bs, "", "")
	return h.ready && (h.allNode || h.allZone)
}

// ClusterBackends returns the endpoints kube-proxy on node, in zone, sends cluster-wide
// traffic to (traffic no Local policy keeps on the node), as its topologyModeFromHints picks
// them: the ready ones hinted for the node when every ready one carries node hints and one
// names the node, otherwise those hinted for the zone when every one carries zone hints and
// one names the zone, otherwise (hints naming neither are ignored, as on a node without a zone
// label) every usable one. Terminating endpoints are the fallback, without regard to topology.
func ClusterBackends(bs []Backend, node, zone string) []Backend {
	h := hintsFor(bs, node, zone)
	switch {
	case h.allNode && h.forNode:
		// A ready endpoint passes keep, so Usable returns only ready ones.
		return Usable(bs, func(b Backend) bool { return slices.Contains(b.NodeHints, node) })
	case h.allZone && h.forZone:
		return Usable(bs, func(b Backend) bool { return slices.Contains(b.ZoneHints, zone) })
	}
	return Usable(bs, nil)
}

// Frontends lists what a node translates, as kube-proxy does on it:
//   - every ClusterIP port, from inside, to every usable endpoint (only the node's own with
//     internalTrafficPolicy Local);
//   - every external and load-balancer address, and every node port on the node's own
//     addresses, twice: from inside (the node and its pods) to every usable endpoint, and from
//     outside to every usable endpoint, or only the node's own with externalTrafficPolicy Local;
//   - every node port on Loopback, from inside (the node's own sockets), to every usable
//     endpoint.
//
// Cluster-wide traffic follows topology hints where the endpoints carry them (ClusterBackends).
// With node "", the frontends whose backends do not depend on the node (no Local policy, no
// hints): a connect-time balancer shared by several nodes (the lab's) translates those and
// leaves the rest to each node's per-packet translation.
func (r *Ruleset) Frontends(node string) []Frontend {
	var nodeIPs []netip.Addr
	zone := ""
	for _, n := range r.Nodes {
		if n.Name == node {
			nodeIPs, zone = n.IPs, n.Zone
		}
	}
	local := func(b Backend) bool { return node != "" && b.Node == node }
	var out []Frontend
	for si := range r.Services {
		s := &r.Services[si]
		for pi := range s.Ports {
			sp := &s.Ports[pi]
			if node == "" && Hinted(sp.Backends) {
				continue
			}
			all := ClusterBackends(sp.Backends, node, zone)
			add := func(addr netip.Addr, port uint16, scope Scope, isLocal, nodePort bool) {
				bs := all
				if isLocal {
					bs = Usable(sp.Backends, local)
				}
				out = append(out, Frontend{Service: s, Port: sp, Addr: addr, Listen: port, Scope: scope, Local: isLocal, NodePort: nodePort, Backends: bs})
			}
			if node != "" || !s.InternalLocal {
				for _, ip := range s.ClusterIPs {
					add(ip, sp.Port, FromInside, s.InternalLocal, false)
				}
			}
			for _, list := range [][]netip.Addr{s.ExternalIPs, s.LoadBalancerIPs} {
				for _, ip := range list {
					add(ip, sp.Port, FromInside, false, false)
					if node != "" {
						add(ip, sp.Port, FromOutside, s.ExternalLocal, false)
					}
				}
			}
			if sp.NodePort == 0 {
				continue
			}
			for _, ip := range nodeIPs {
				add(ip, sp.NodePort, FromInside, false, true)
				add(ip, sp.NodePort, FromOutside, s.ExternalLocal, true)
			}
			add(Loopback, sp.NodePort, FromInside, false, true)
		}
	}
	return out
}

// Loopback is where the node's own sockets reach node ports too, as kube-proxy's iptables mode
// lets them (its localhost node ports), to every usable endpoint: a dataplane serves it only
// to the node's own network namespace (a pod's loopback is its own).
var Loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})
