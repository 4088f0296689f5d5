package iptables

import (
	"fmt"
	"strings"

	"github.com/rampart-sec/rampart/internal/ir"
)

// nat renders kube-proxy-style Service load balancing: ClusterIP:port is DNATed to a backend
// chosen at random with equal weights, in PREROUTING (traffic from pods) and OUTPUT (traffic
// from the node and host-network pods). Policy in the filter table then sees the backend's
// address and port. A pod reaching itself through its Service is masqueraded so that its reply
// goes back through the node and is un-NATed.
func (r *renderer) nat() {
	svc := Chain{Name: ChainPrefix + "SERVICES"}
	post := Chain{Name: ChainPrefix + "POSTROUTING", Rules: []string{
		fmt.Sprintf("-m mark --mark %#x/%#x -j MASQUERADE", markMasq, markMasq),
	}}
	for _, s := range r.rs.Services {
		for _, sp := range s.Ports {
			if len(sp.Backends) == 0 {
				continue
			}
			proto := strings.ToLower(sp.Protocol.String())
			key := fmt.Sprintf("%s/%s:%s/%d", s.Namespace, s.Name, proto, sp.Port)
			lb := Chain{Name: ChainPrefix + "S-" + hash(key)}
			for i, b := range sp.Backends {
				be := Chain{Name: ChainPrefix + "B-" + hash(fmt.Sprintf("%s|%s:%d", key, b.IP, b.Port))}
				be.Rules = []string{
					fmt.Sprintf("-s %s/32 -j MARK --set-xmark %#x/%#x", b.IP, markMasq, markMasq),
					fmt.Sprintf("-p %s -m %s -j DNAT --to-destination %s:%d", proto, proto, b.IP, b.Port),
				}
				r.addChain("nat", be)
				if n := len(sp.Backends) - i; n > 1 {
					lb.Rules = append(lb.Rules, fmt.Sprintf("-m statistic --mode random --probability %.10f -j %s", 1/float64(n), be.Name))
				} else {
					lb.Rules = append(lb.Rules, "-j "+be.Name)
				}
			}
			r.addChain("nat", lb)
			for _, vip := range s.ClusterIPs {
				if !vip.Is4() {
					continue
				}
				svc.Rules = append(svc.Rules, fmt.Sprintf("-d %s/32 -p %s -m %s --dport %d -m comment --comment %q -j %s",
					vip, proto, proto, sp.Port, s.Namespace+"/"+s.Name+":"+portName(sp), lb.Name))
			}
		}
	}
	r.addChain("nat", svc)
	r.addChain("nat", post)
	r.spec.Jumps = append(r.spec.Jumps, Jump{"nat", "PREROUTING", svc.Name}, Jump{"nat", "OUTPUT", svc.Name}, Jump{"nat", "POSTROUTING", post.Name})
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
	for _, s := range r.rs.Services {
		for _, sp := range s.Ports {
			if len(sp.Backends) > 0 || (sp.Protocol != ir.TCP && sp.Protocol != ir.UDP && sp.Protocol != ir.SCTP) {
				continue
			}
			proto := strings.ToLower(sp.Protocol.String())
			for _, vip := range s.ClusterIPs {
				if vip.Is4() {
					c.Rules = append(c.Rules, fmt.Sprintf("-d %s/32 -p %s -m %s --dport %d -m comment --comment %q -j REJECT --reject-with icmp-port-unreachable",
						vip, proto, proto, sp.Port, s.Namespace+"/"+s.Name+":"+portName(sp)+" has no endpoints"))
				}
			}
		}
	}
	if len(c.Rules) == 0 {
		return "", false
	}
	r.addChain("filter", c)
	return c.Name, true
}
