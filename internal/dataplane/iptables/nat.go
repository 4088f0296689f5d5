package iptables

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/rampart-sec/rampart/internal/ir"
)

// nat renders kube-proxy-style Service load balancing for the node's frontends
// (ir.Ruleset.Frontends): a frontend address and port is DNATed to a backend chosen at random
// with equal weights, in PREROUTING (traffic from pods, and from outside on the uplink) and
// OUTPUT (traffic from the node and host-network pods). Policy in the filter table then sees
// the backend's address and port. A pod reaching itself through its Service is masqueraded so
// that its reply goes back through the node and is un-NATed; so is traffic from outside sent on
// to another node's backend (externalTrafficPolicy: Cluster), so that the reply comes back
// through this node. With externalTrafficPolicy: Local it goes only to local backends, and
// keeps its source address.
func (r *renderer) nat() {
	svc := Chain{Name: ChainPrefix + "SERVICES"}
	ext := Chain{Name: ChainPrefix + "EXT-SERVICES"}
	post := Chain{Name: ChainPrefix + "POSTROUTING", Rules: []string{
		fmt.Sprintf("-m mark --mark %#x/%#x -j MASQUERADE", markMasq, markMasq),
	}}
	made := map[string]bool{}
	for _, fe := range r.frontends() {
		// Node ports on 127.0.0.1 (ir.Loopback) would need route_localnet and a masquerade of
		// the node's loopback source; the lab's NAT leaves them out.
		if !fe.Addr.Is4() || fe.Addr.IsLoopback() || len(fe.Backends) == 0 || (fe.Scope == ir.FromOutside && r.node.Uplink == "") {
			continue
		}
		proto := strings.ToLower(fe.Port.Protocol.String())
		key := fe.Key()
		lbKey := key
		if fe.Scope == ir.FromOutside {
			lbKey = fmt.Sprintf("%s|outside|local=%v", key, fe.Local)
		}
		if fe.Local {
			for _, b := range fe.Backends {
				lbKey += "|" + b.IP.String()
			}
		}
		lb := Chain{Name: ChainPrefix + "S-" + hash(lbKey)}
		if !made[lb.Name] {
			made[lb.Name] = true
			var sticky []string
			for i, b := range fe.Backends {
				be := Chain{Name: ChainPrefix + "B-" + hash(fmt.Sprintf("%s|%s:%d", lbKey, b.IP, b.Port))}
				switch {
				case fe.Scope == ir.FromInside:
					be.Rules = []string{fmt.Sprintf("-s %s/32 -j MARK --set-xmark %#x/%#x", b.IP, markMasq, markMasq)}
				case b.Node != r.node.Name:
					be.Rules = []string{fmt.Sprintf("-j MARK --set-xmark %#x/%#x", markMasq, markMasq)}
				}
				remember := ""
				if t := fe.Service.AffinitySeconds; t > 0 {
					// Session affinity as kube-proxy does it: each backend's chain records the
					// clients it took (xt_recent), and the Service's chain sends a client
					// seen within the timeout back to the same backend.
					remember = fmt.Sprintf("-m recent --name %s --mask 255.255.255.255 --rsource --set ", be.Name)
					sticky = append(sticky, fmt.Sprintf("-m recent --name %s --mask 255.255.255.255 --rsource --rcheck --seconds %d --reap -j %s", be.Name, t, be.Name))
				}
				be.Rules = append(be.Rules, fmt.Sprintf("-p %s %s-m %s -j DNAT --to-destination %s:%d", proto, remember, proto, b.IP, b.Port))
				r.addChain("nat", be)
				if n := len(fe.Backends) - i; n > 1 {
					lb.Rules = append(lb.Rules, fmt.Sprintf("-m statistic --mode random --probability %.10f -j %s", 1/float64(n), be.Name))
				} else {
					lb.Rules = append(lb.Rules, "-j "+be.Name)
				}
			}
			lb.Rules = append(sticky, lb.Rules...)
			r.addChain("nat", lb)
		}
		target := lb.Name
		addr := netip.AddrPortFrom(fe.Addr, fe.Listen)
		if id := uint32(len(r.spec.Frontends) + 1); id <= markFront {
			// The frontend's own chain marks the packet with its id, for flow events.
			target = ChainPrefix + "F-" + hash(fmt.Sprintf("%s|%s|%s|%d", lbKey, addr, proto, fe.Scope))
			if !made[target] {
				made[target] = true
				mf := MarkedFrontend{Addr: addr, Protocol: fe.Port.Protocol, Backends: map[netip.AddrPort]bool{}}
				for _, b := range fe.Backends {
					mf.Backends[netip.AddrPortFrom(b.IP, b.Port)] = true
				}
				if r.spec.Frontends == nil {
					r.spec.Frontends = map[uint32]MarkedFrontend{}
				}
				r.spec.Frontends[id] = mf
				r.addChain("nat", Chain{Name: target, Rules: []string{fmt.Sprintf("-j MARK --set-xmark %#x/%#x", id, markFront), "-g " + lb.Name}})
			}
		}
		rule := fmt.Sprintf("-d %s/32 -p %s -m %s --dport %d -m comment --comment %q -j %s",
			fe.Addr, proto, proto, fe.Listen, fe.Service.Namespace+"/"+fe.Service.Name+":"+portName(*fe.Port), target)
		if fe.Scope == ir.FromOutside {
			ext.Rules = append(ext.Rules, rule)
		} else {
			svc.Rules = append(svc.Rules, rule)
		}
	}
	r.addChain("nat", svc)
	r.addChain("nat", post)
	pre := svc.Name
	if r.node.Uplink != "" {
		// Traffic arriving on the uplink is from outside: only the frontends reached from
		// outside translate it (a node port of externalTrafficPolicy Local with no local
		// endpoint must not fall through to the one pods use).
		in := Chain{Name: ChainPrefix + "PREROUTING", Rules: []string{
			fmt.Sprintf("-i %s -j %s", r.node.Uplink, ext.Name),
			fmt.Sprintf("-i %s -j RETURN", r.node.Uplink),
			"-j " + svc.Name,
		}}
		r.addChain("nat", ext)
		r.addChain("nat", in)
		pre = in.Name
	}
	r.spec.Jumps = append(r.spec.Jumps, Jump{"nat", "PREROUTING", pre}, Jump{"nat", "OUTPUT", svc.Name}, Jump{"nat", "POSTROUTING", post.Name})
}

// frontends lists the node's frontends once per render: the NAT, NO-ENDPOINTS and EXT-DROP
// chains all read them.
func (r *renderer) frontends() []ir.Frontend {
	if r.fronts == nil {
		r.fronts = r.rs.Frontends(r.node.Name)
	}
	return r.fronts
}

func portName(sp ir.ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return fmt.Sprint(sp.Port)
}

// noEndpoints renders, where rampart translates Services (no kube-proxy), the chain that
// refuses connections to Service ports without endpoints as kube-proxy does (REJECT, ICMP port
// unreachable: the client sees "connection refused" at once), and reports whether it has any
// rule.
func (r *renderer) noEndpoints() (string, bool) {
	if r.node.KubeProxy {
		return "", false
	}
	c := Chain{Name: ChainPrefix + "NO-ENDPOINTS"}
	for _, fe := range r.frontends() {
		sp := fe.Port
		if fe.Scope != ir.FromInside || len(fe.Backends) > 0 || fe.NodePort || !fe.Addr.Is4() || (sp.Protocol != ir.TCP && sp.Protocol != ir.UDP && sp.Protocol != ir.SCTP) {
			continue
		}
		proto := strings.ToLower(sp.Protocol.String())
		c.Rules = append(c.Rules, fmt.Sprintf("-d %s/32 -p %s -m %s --dport %d -m comment --comment %q -j REJECT --reject-with icmp-port-unreachable",
			fe.Addr, proto, proto, fe.Listen, fe.Service.Namespace+"/"+fe.Service.Name+":"+portName(*sp)+" has no endpoints"))
	}
	if len(c.Rules) == 0 {
		return "", false
	}
	r.addChain("filter", c)
	return c.Name, true
}

// externalDrops renders, where rampart translates Services, the chain that stops traffic from
// outside (on the uplink) to a frontend it reaches without an endpoint to serve it, as
// kube-proxy's KUBE-EXTERNAL-SERVICES does: dropped where only other nodes have endpoints
// (externalTrafficPolicy Local), refused (port unreachable) where there are none. (A node port
// without any endpoint is left to the node's stack, which refuses it.) It reports whether the
// chain has any rule.
func (r *renderer) externalDrops() (string, bool) {
	if r.node.KubeProxy || r.node.Uplink == "" {
		return "", false
	}
	c := Chain{Name: ChainPrefix + "EXT-DROP"}
	for _, fe := range r.frontends() {
		sp := fe.Port
		if fe.Scope != ir.FromOutside || len(fe.Backends) > 0 || (fe.NodePort && !fe.Local) || !fe.Addr.Is4() ||
			(sp.Protocol != ir.TCP && sp.Protocol != ir.UDP && sp.Protocol != ir.SCTP) {
			continue
		}
		proto := strings.ToLower(sp.Protocol.String())
		verdict, why := "DROP", " has no endpoint here"
		if len(ir.Usable(sp.Backends, nil)) == 0 {
			verdict, why = "REJECT --reject-with icmp-port-unreachable", " has no endpoints"
		}
		c.Rules = append(c.Rules, fmt.Sprintf("-i %s -d %s/32 -p %s -m %s --dport %d -m comment --comment %q -j %s",
			r.node.Uplink, fe.Addr, proto, proto, fe.Listen, fe.Service.Namespace+"/"+fe.Service.Name+":"+portName(*sp)+why, verdict))
	}
	if len(c.Rules) == 0 {
		return "", false
	}
	r.addChain("filter", c)
	return c.Name, true
}
