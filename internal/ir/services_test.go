package ir

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestFrontends: what a node translates, as kube-proxy decides it, for each kind of Service.
func TestFrontends(t *testing.T) {
	ip := netip.MustParseAddr
	b := func(addr, node string, terminating bool) Backend {
		return Backend{Pod: -1, IP: ip(addr), Port: 8080, Node: node, Terminating: terminating}
	}
	rs := &Ruleset{
		Nodes: []Node{{Name: "n1", IPs: []netip.Addr{ip("172.30.0.10")}}, {Name: "n2", IPs: []netip.Addr{ip("172.30.0.11")}}},
		Services: []Service{
			{Namespace: "x", Name: "plain", ClusterIPs: []netip.Addr{ip("10.96.0.1")},
				Ports: []ServicePort{{Port: 80, Protocol: TCP, Backends: []Backend{b("10.0.1.1", "n1", false), b("10.0.2.1", "n2", false)}}}},
			{Namespace: "x", Name: "itp", ClusterIPs: []netip.Addr{ip("10.96.0.2")}, InternalLocal: true,
				Ports: []ServicePort{{Port: 80, Protocol: TCP, Backends: []Backend{b("10.0.1.1", "n1", false), b("10.0.2.1", "n2", false)}}}},
			{Namespace: "x", Name: "lb", ClusterIPs: []netip.Addr{ip("10.96.0.3")}, LoadBalancerIPs: []netip.Addr{ip("172.30.1.1")}, ExternalLocal: true,
				Ports: []ServicePort{{Port: 80, Protocol: TCP, NodePort: 30080, Backends: []Backend{b("10.0.2.1", "n2", false)}}}},
			{Namespace: "x", Name: "term", ClusterIPs: []netip.Addr{ip("10.96.0.4")}, ExternalIPs: []netip.Addr{ip("203.0.113.1")},
				Ports: []ServicePort{{Port: 53, Protocol: UDP, Backends: []Backend{b("10.0.1.1", "n1", true), b("10.0.1.2", "n1", true)}}}},
		},
	}
	show := func(fs []Frontend) []string {
		var out []string
		for _, f := range fs {
			var bs []string
			for _, b := range f.Backends {
				bs = append(bs, b.IP.String())
			}
			s := fmt.Sprintf("%s %s:%d %s", f.Service.Name, f.Addr, f.Listen, f.Scope)
			if f.Local {
				s += " local"
			}
			if f.NodePort {
				s += " nodeport"
			}
			out = append(out, s+" -> "+strings.Join(bs, ","))
		}
		return out
	}
	tests := []struct {
		node string
		want []string
	}{
		{"n1", []string{
			"plain 10.96.0.1:80 inside -> 10.0.1.1,10.0.2.1",
			"itp 10.96.0.2:80 inside local -> 10.0.1.1",
			"lb 10.96.0.3:80 inside -> 10.0.2.1",
			"lb 172.30.1.1:80 inside -> 10.0.2.1",
			"lb 172.30.1.1:80 outside local -> ",
			"lb 172.30.0.10:30080 inside nodeport -> 10.0.2.1",
			"lb 172.30.0.10:30080 outside local nodeport -> ",
			"term 10.96.0.4:53 inside -> 10.0.1.1,10.0.1.2",
			"term 203.0.113.1:53 inside -> 10.0.1.1,10.0.1.2",
			"term 203.0.113.1:53 outside -> 10.0.1.1,10.0.1.2",
		}},
		{"n2", []string{
			"plain 10.96.0.1:80 inside -> 10.0.1.1,10.0.2.1",
			"itp 10.96.0.2:80 inside local -> 10.0.2.1",
			"lb 10.96.0.3:80 inside -> 10.0.2.1",
			"lb 172.30.1.1:80 inside -> 10.0.2.1",
			"lb 172.30.1.1:80 outside local -> 10.0.2.1",
			"lb 172.30.0.11:30080 inside nodeport -> 10.0.2.1",
			"lb 172.30.0.11:30080 outside local nodeport -> 10.0.2.1",
			"term 10.96.0.4:53 inside -> 10.0.1.1,10.0.1.2",
			"term 203.0.113.1:53 inside -> 10.0.1.1,10.0.1.2",
			"term 203.0.113.1:53 outside -> 10.0.1.1,10.0.1.2",
		}},
		// A balancer shared by nodes: nothing whose backends depend on the node.
		{"", []string{
			"plain 10.96.0.1:80 inside -> 10.0.1.1,10.0.2.1",
			"lb 10.96.0.3:80 inside -> 10.0.2.1",
			"lb 172.30.1.1:80 inside -> 10.0.2.1",
			"term 10.96.0.4:53 inside -> 10.0.1.1,10.0.1.2",
			"term 203.0.113.1:53 inside -> 10.0.1.1,10.0.1.2",
		}},
	}
	for _, tt := range tests {
		if got := show(rs.Frontends(tt.node)); !slices.Equal(got, tt.want) {
			t.Errorf("node %q:\n got  %q\n want %q", tt.node, got, tt.want)
		}
	}
}

// TestUsable: terminating endpoints serve only where no ready one is left.
func TestUsable(t *testing.T) {
	ready := Backend{IP: netip.MustParseAddr("10.0.0.1"), Node: "a"}
	term := Backend{IP: netip.MustParseAddr("10.0.0.2"), Node: "b", Terminating: true}
	if got := Usable([]Backend{ready, term}, nil); !slices.Equal(got, []Backend{ready}) {
		t.Errorf("ready and terminating: %v, want the ready one", got)
	}
	if got := Usable([]Backend{ready, term}, func(b Backend) bool { return b.Node == "b" }); !slices.Equal(got, []Backend{term}) {
		t.Errorf("only the terminating one kept: %v, want it", got)
	}
	if got := Usable(nil, nil); len(got) != 0 {
		t.Errorf("none: %v", got)
	}
}
