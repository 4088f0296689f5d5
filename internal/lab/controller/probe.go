package controller

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

// ProbeRequest selects probes: empty fields mean "all".
type ProbeRequest struct {
	From     string        `json:"from,omitempty"` // ns/pod, or "external" (the external client)
	To       string        `json:"to,omitempty"`   // ns/pod, or an address (with Port)
	Port     uint16        `json:"port,omitempty"`
	Protocol string        `json:"protocol,omitempty"`
	Via      string        `json:"via,omitempty"` // service (default) or pod
	Timeout  time.Duration `json:"timeout,omitempty"`
}

// Probe is one probe's outcome, in the JSON users and tests read.
type Probe struct {
	From      string  `json:"from"`
	To        string  `json:"to"`
	Port      uint16  `json:"port"`
	Protocol  string  `json:"protocol"`
	Via       string  `json:"via"`
	Target    string  `json:"target"`
	Connected bool    `json:"connected"`
	Ms        float64 `json:"ms"`
	Error     string  `json:"error,omitempty"`
	// Server is the pod that answered, Client the client's address and port as that server
	// saw them (TCP and UDP): the external client's own where it is preserved, a node's where
	// it was translated.
	Server string `json:"server,omitempty"`
	Client string `json:"client,omitempty"`
}

// External names the external client as a probe's source.
const External = "external"

// Probe runs the selected probes: every ordered pair of distinct pods (host-network pods
// included) on every port the destination declares, narrowed by the request's filters.
func (l *Lab) Probe(ctx context.Context, req ProbeRequest) ([]Probe, error) {
	_, rs := l.Snapshot()
	if rs == nil {
		return nil, fmt.Errorf("lab is not up")
	}
	if req.Via == "" {
		req.Via = "service"
	}
	if req.Via != "service" && req.Via != "pod" {
		return nil, fmt.Errorf("--via must be service or pod, not %q", req.Via)
	}
	if req.Timeout <= 0 {
		req.Timeout = time.Second
	}
	var proto ir.Protocol
	if req.Protocol != "" {
		p, err := ir.ParseProtocol(req.Protocol)
		if err != nil {
			return nil, err
		}
		proto = p
	}
	pods := sortedPods(rs)
	addr, toAddr := netip.Addr{}, false
	if a, err := netip.ParseAddr(req.To); err == nil {
		addr, toAddr = a.Unmap(), true
		if req.Port == 0 {
			return nil, fmt.Errorf("--to %s is an address: --port is required", req.To)
		}
	}
	if req.From == External && req.To != "" && !toAddr {
		if rs.PodByKey(req.To) == nil {
			return nil, fmt.Errorf("no pod %s in the lab", req.To)
		}
		return nil, fmt.Errorf("--from external probes an address (a node's, an external or load-balancer address), not the pod %s: pods are not reachable from outside the cluster", req.To)
	}
	for _, k := range []string{req.From, req.To} {
		if k != "" && k != External && (k != req.To || !toAddr) && rs.PodByKey(k) == nil {
			return nil, fmt.Errorf("no pod %s in the lab", k)
		}
	}
	var out []Probe
	var specs []ProbeSpec
	if toAddr {
		if proto == 0 {
			proto = ir.TCP
		}
		dst := netip.AddrPortFrom(addr, req.Port)
		add := func(from string, spec ProbeSpec) {
			out = append(out, Probe{From: from, To: addr.String(), Port: req.Port, Protocol: proto.String(), Via: "address", Target: dst.String()})
			spec.Dst, spec.Protocol, spec.Timeout = dst, proto.String(), req.Timeout
			specs = append(specs, spec)
		}
		if req.From == External || req.From == "" {
			add(External, ProbeSpec{External: true})
		}
		for _, from := range pods {
			if req.From == "" || req.From == from.Key() {
				add(from.Key(), ProbeSpec{FromNamespace: from.Namespace, FromName: from.Name})
			}
		}
		pods = nil
	} else if req.From == External {
		return nil, fmt.Errorf("--from external needs --to ADDRESS and --port")
	}
	for _, from := range pods {
		if req.From != "" && from.Key() != req.From {
			continue
		}
		for _, to := range pods {
			if from == to || (req.To != "" && to.Key() != req.To) {
				continue
			}
			ports := selectPorts(to, req.Port, proto, req.To != "")
			for _, pp := range ports {
				p := Probe{From: from.Key(), To: to.Key(), Port: pp.Port, Protocol: pp.Protocol.String(), Via: req.Via}
				dst := netip.AddrPortFrom(to.IP(), pp.Port)
				if req.Via == "service" {
					if svc, ok := serviceTarget(rs, to, pp.Port, pp.Protocol); ok {
						dst = svc
					} else {
						p.Via = "pod" // no Service reaches exactly this pod and port
					}
				}
				p.Target = dst.String()
				out = append(out, p)
				specs = append(specs, ProbeSpec{FromNamespace: from.Namespace, FromName: from.Name, Dst: dst, Protocol: p.Protocol, Timeout: req.Timeout})
			}
		}
	}
	results := l.fabric.Probe(ctx, specs)
	for i := range out {
		out[i].Connected, out[i].Ms, out[i].Error = results[i].Connected, results[i].Ms, results[i].Err
		out[i].Server, out[i].Client = results[i].Server, results[i].Client
	}
	return out, nil
}

// selectPorts returns the destination's declared ports narrowed to port and proto (0: any).
// A port the destination does not declare is probed only when the destination was named
// explicitly (proto defaulting to TCP): a matrix over every pod skips pods without it.
func selectPorts(to *ir.Pod, port uint16, proto ir.Protocol, explicit bool) []policy.PortProto {
	var out []policy.PortProto
	for _, pp := range policy.DeclaredPorts(to) {
		if (port == 0 || pp.Port == port) && (proto == 0 || pp.Protocol == proto) {
			out = append(out, pp)
		}
	}
	if len(out) == 0 && port != 0 && explicit {
		if proto == 0 {
			proto = ir.TCP
		}
		out = []policy.PortProto{{Port: port, Protocol: proto}}
	}
	return out
}

// CompareProbes returns a line for each probe in want whose outcome differs from got (or that
// got lacks). Probes are matched on from, to, port and protocol.
func CompareProbes(got, want []Probe) []string {
	type key struct {
		from, to string
		port     uint16
		proto    string
	}
	have := map[key]Probe{}
	for _, p := range got {
		have[key{p.From, p.To, p.Port, strings.ToUpper(p.Protocol)}] = p
	}
	var diffs []string
	for _, w := range want {
		g, ok := have[key{w.From, w.To, w.Port, strings.ToUpper(w.Protocol)}]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s -> %s %d/%s: not probed", w.From, w.To, w.Port, w.Protocol))
		case g.Connected != w.Connected:
			diffs = append(diffs, fmt.Sprintf("%s -> %s %d/%s via %s (%s): connected=%v, expected %v", w.From, w.To, w.Port, w.Protocol, g.Via, g.Target, g.Connected, w.Connected))
		}
	}
	return diffs
}
