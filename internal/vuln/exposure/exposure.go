// Package exposure answers "who can reach this pod?" from the reference policy evaluator: for
// each port a pod declares, whether addresses outside the cluster (public or private), every
// pod, some pods, or nothing can open a connection to it, and which policy rule decides that.
// The vulnerability report ranks findings by it.
package exposure

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Class is how far a port is reachable, highest first.
type Class string

const (
	Internet Class = "internet" // public addresses outside the cluster can connect
	External Class = "external" // only some non-public addresses outside the cluster can connect
	Cluster  Class = "cluster"  // every other pod, in every namespace, can connect
	Pods     Class = "pods"     // some pods can connect
	None     Class = "none"     // nothing can connect
)

// Weight orders classes for ranking: how much of the world can attempt an exploit.
func (c Class) Weight() float64 {
	switch c {
	case Internet:
		return 1.0
	case External:
		return 0.7
	case Cluster:
		return 0.5
	case Pods:
		return 0.3
	}
	return 0.1 // unreachable over the network; local exploitation remains possible
}

// Port is the exposure of one declared port.
type Port struct {
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Class    Class  `json:"class"`
	// FromAddresses lists the address ranges outside the cluster that can connect (capped).
	FromAddresses []string `json:"fromAddresses,omitempty"`
	// FromPods lists the pods that can connect when only some can (capped); PodsAllowed counts
	// them all, out of PodsTotal other pods.
	FromPods    []string `json:"fromPods,omitempty"`
	PodsAllowed int      `json:"podsAllowed"`
	PodsTotal   int      `json:"podsTotal"`
	// Because says which rule opens the port to its widest audience, or what closes it.
	Because string `json:"because"`
}

// Pod is the exposure of one pod: its widest port decides its class.
type Pod struct {
	Pod   string `json:"pod"` // ns/name
	IP    string `json:"ip,omitempty"`
	Class Class  `json:"class"`
	Ports []Port `json:"ports"`
	// PortsFrom is "services" when the pod declares no container ports and its ports are the
	// target ports of the Services selecting it.
	PortsFrom string `json:"portsFrom,omitempty"`
	// NoAddress says the pod has no IP yet (not running): nothing can reach it for now.
	NoAddress bool `json:"noAddress,omitempty"`
}

// listCap bounds the pods and ranges listed per port; counts stay exact.
const listCap = 10

// Analyzer computes exposures against one evaluator, reusing the external address partition.
type Analyzer struct {
	ev      *policy.Evaluator
	reps    map[bool][]span // by IPv6: external address intervals, each decided alike by policy
	sources []sourceClass   // pods with addresses, as possible sources, grouped
	cache   map[string]Pod
}

// sourceClass is a group of pods every policy treats alike as the source of a flow to any
// given destination: they are in the same address sets (so every ingress rule's peers match
// all or none of them) and selected by the same egress policies. One verdict decides the class.
type sourceClass struct {
	pods []*ir.Pod
}

// New prepares an analyzer for ev's rule set.
func New(ev *policy.Evaluator) *Analyzer {
	rs := ev.Ruleset()
	a := &Analyzer{ev: ev, reps: map[bool][]span{}, cache: map[string]Pod{}}
	a.sources = sourceClasses(rs)
	a.reps[false] = partition(rs, false)
	a.reps[true] = partition(rs, true)
	return a
}

// sourceClasses groups the pods (with addresses, not host-network) by the address sets holding
// their address and the egress policies selecting them.
func sourceClasses(rs *ir.Ruleset) []sourceClass {
	member := map[netip.Addr][]ir.SetID{}
	var blockSets []*ir.AddrSet
	for i := range rs.Sets {
		s := &rs.Sets[i]
		for _, ip := range s.IPs {
			member[ip] = append(member[ip], s.ID)
		}
		if len(s.Blocks) > 0 {
			blockSets = append(blockSets, s)
		}
	}
	byKey := map[string]int{}
	var out []sourceClass
	for i := range rs.Pods {
		p := &rs.Pods[i]
		if len(p.IPs) == 0 || p.HostNetwork {
			continue
		}
		ip := p.IP()
		sets := append([]ir.SetID(nil), member[ip]...)
		for _, s := range blockSets {
			for _, b := range s.Blocks {
				if b.Contains(ip) {
					sets = append(sets, s.ID)
					break
				}
			}
		}
		slices.Sort(sets)
		sets = slices.Compact(sets)
		k := fmt.Sprintf("%v|%v|%v", ip.Is6(), sets, rs.PoliciesFor(p.ID, ir.Egress))
		idx, ok := byKey[k]
		if !ok {
			idx = len(out)
			byKey[k] = idx
			out = append(out, sourceClass{})
		}
		out[idx].pods = append(out[idx].pods, p)
	}
	return out
}

// Of returns the exposure of pod (key "ns/name"); ok is false when the pod is unknown.
func (a *Analyzer) Of(key string) (Pod, bool) {
	if p, ok := a.cache[key]; ok {
		return p, true
	}
	p := a.ev.Ruleset().PodByKey(key)
	if p == nil {
		return Pod{}, false
	}
	e := a.compute(p)
	a.cache[key] = e
	return e, true
}

func (a *Analyzer) compute(p *ir.Pod) Pod {
	out := Pod{Pod: p.Key(), Class: None}
	if len(p.IPs) == 0 {
		out.NoAddress = true // not running with an address: nothing can reach it yet
		return out
	}
	dst := p.IP()
	out.IP = dst.String()
	ports := policy.DeclaredPorts(p)
	if len(ports) == 0 {
		// Declaring container ports is optional; the ports Services send to the pod are ports
		// it serves.
		ports = a.servicePorts(p)
		out.PortsFrom = "services"
	}
	for _, pp := range ports {
		pe := a.port(p, dst, pp)
		if pe.Class.Weight() > out.Class.Weight() {
			out.Class = pe.Class
		}
		out.Ports = append(out.Ports, pe)
	}
	return out
}

func (a *Analyzer) port(p *ir.Pod, dst netip.Addr, pp policy.PortProto) Port {
	pe := Port{Port: pp.Port, Protocol: pp.Protocol.String(), Class: None}
	verdict := func(src netip.Addr) policy.Decision {
		return a.ev.Verdict(policy.Flow{Src: src, Dst: dst, Protocol: pp.Protocol, Port: pp.Port})
	}
	// Outside the cluster: one verdict per interval of the partition.
	var public, private []span
	var publicWhy, privateWhy, deniedWhy string
	for _, s := range a.reps[dst.Is6()] {
		d := verdict(s.rep)
		if !d.Allowed {
			if deniedWhy == "" {
				deniedWhy = why(d)
			}
			continue
		}
		if s.public {
			public = append(public, s)
			if publicWhy == "" {
				publicWhy = why(d)
			}
		} else {
			private = append(private, s)
			if privateWhy == "" {
				privateWhy = why(d)
			}
		}
	}
	// Pods: every other pod as a source (egress of the source counts too), one verdict per
	// class of pods the policies treat alike.
	var allowedPods []string
	total := 0
	podWhy := ""
	var eligible []*ir.Pod // of a class: the other pods of dst's address family
	for _, c := range a.sources {
		eligible = eligible[:0]
		for _, src := range c.pods {
			if src.ID != p.ID && src.IP().Is6() == dst.Is6() {
				eligible = append(eligible, src)
			}
		}
		if len(eligible) == 0 {
			continue
		}
		total += len(eligible)
		d := verdict(eligible[0].IP())
		if !d.Allowed {
			if deniedWhy == "" {
				deniedWhy = why(d)
			}
			continue
		}
		for _, src := range eligible {
			allowedPods = append(allowedPods, src.Key())
		}
		if podWhy == "" {
			podWhy = why(d)
		}
	}
	pe.PodsAllowed, pe.PodsTotal = len(allowedPods), total
	ext := append(append([]span{}, public...), private...)
	pe.FromAddresses = capped(describeSpans(ext))
	switch {
	case len(public) > 0:
		pe.Class, pe.Because = Internet, publicWhy
	case len(private) > 0:
		pe.Class, pe.Because = External, privateWhy
	case total > 0 && len(allowedPods) == total:
		pe.Class, pe.Because = Cluster, podWhy
	case len(allowedPods) > 0:
		pe.Class, pe.Because = Pods, podWhy
	default:
		pe.Because = deniedWhy
	}
	if pe.Class == Pods {
		sort.Strings(allowedPods)
		pe.FromPods = capped(allowedPods)
	}
	return pe
}

// servicePorts are the (port, protocol) pairs Services forward to the pod, in a stable order.
func (a *Analyzer) servicePorts(p *ir.Pod) []policy.PortProto {
	seen := map[policy.PortProto]bool{}
	var out []policy.PortProto
	for _, s := range a.ev.Ruleset().Services {
		for _, sp := range s.Ports {
			for _, b := range sp.Backends {
				pp := policy.PortProto{Port: b.Port, Protocol: sp.Protocol}
				if b.Pod == p.ID && !seen[pp] {
					seen[pp] = true
					out = append(out, pp)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Protocol < out[j].Protocol
	})
	return out
}

// why names what decided a flow: the side that denied it, or for an allowed flow the side a
// rule decided (the pod's own ingress first).
func why(d policy.Decision) string {
	side := d.Ingress
	switch {
	case !d.Ingress.Allowed:
	case !d.Egress.Allowed:
		side = d.Egress
	case d.Ingress.DecidedBy != policy.DecidedByRule && d.Egress.DecidedBy == policy.DecidedByRule:
		side = d.Egress
	}
	switch side.DecidedBy {
	case policy.DecidedByRule:
		name := fmt.Sprintf("rule %d", side.Rule)
		if side.RuleName != "" {
			name = fmt.Sprintf("rule %q", side.RuleName)
		}
		return fmt.Sprintf("%s %s %s of %s", side.Direction, actionWord(side), name, side.Policy)
	case policy.DecidedIsolated:
		return fmt.Sprintf("isolated for %s by NetworkPolicy, and no rule allows it", side.Direction)
	case policy.DecidedDefault:
		return "no policy restricts it"
	}
	return side.Reason
}

func actionWord(s policy.Side) string {
	if s.Allowed {
		return "allowed by"
	}
	return "denied by"
}

func capped(l []string) []string {
	if len(l) > listCap {
		return append(l[:listCap:listCap], fmt.Sprintf("... and %d more", len(l)-listCap))
	}
	return l
}
