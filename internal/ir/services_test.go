package ir

import (
	"fmt"
	"net/netip"
	"reflect"
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
			"lb 127.0.0.1:30080 inside nodeport -> 10.0.2.1",
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
			"lb 127.0.0.1:30080 inside nodeport -> 10.0.2.1",
			"term 10.96.0.4:53 inside -> 10.0.1.1,10.0.1.2",
			"term 203.0.113.1:53 inside -> 10.0.1.1,10.0.1.2",
			"term 203.0.113.1:53 outside -> 10.0.1.1,10.0.1.2",
		}},
		// A balancer shared by nodes: nothing whose backends depend on the node; the node
		// port on 127.0.0.1 goes to every endpoint on every node.
		{"", []string{
			"plain 10.96.0.1:80 inside -> 10.0.1.1,10.0.2.1",
			"lb 10.96.0.3:80 inside -> 10.0.2.1",
			"lb 172.30.1.1:80 inside -> 10.0.2.1",
			"lb 127.0.0.1:30080 inside nodeport -> 10.0.2.1",
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
	if got := Usable([]Backend{ready, term}, nil); !reflect.DeepEqual(got, []Backend{ready}) {
		t.Errorf("ready and terminating: %v, want the ready one", got)
	}
	if got := Usable([]Backend{ready, term}, func(b Backend) bool { return b.Node == "b" }); !reflect.DeepEqual(got, []Backend{term}) {
		t.Errorf("only the terminating one kept: %v, want it", got)
	}
	if got := Usable(nil, nil); len(got) != 0 {
		t.Errorf("none: %v", got)
	}
}

// TestTopologyHints: cluster-wide traffic goes to the endpoints hinted for the node's zone, as
// kube-proxy's topology-aware routing does, only when every ready endpoint is hinted and one
// is for the zone; Local policies and the terminating fallback ignore hints; a balancer shared
// by nodes (node "") leaves hinted Services to the nodes.
func TestTopologyHints(t *testing.T) {
	ip := netip.MustParseAddr
	b := func(addr, node string, terminating bool, zones ...string) Backend {
		return Backend{Pod: -1, IP: ip(addr), Port: 8080, Node: node, Terminating: terminating, ZoneHints: zones}
	}
	// Node hints (PreferSameNode) come with zone hints, as the EndpointSlice controller sets them.
	onNode := func(addr, node, zone string) Backend {
		return Backend{Pod: -1, IP: ip(addr), Port: 8080, Node: node, ZoneHints: []string{zone}, NodeHints: []string{node}}
	}
	svc := func(name, cip string, bs ...Backend) Service {
		return Service{Namespace: "x", Name: name, ClusterIPs: []netip.Addr{ip(cip)}, Ports: []ServicePort{{Port: 80, Protocol: TCP, Backends: bs}}}
	}
	local := svc("local", "10.96.0.5", b("10.0.1.1", "n1", false, "a"), b("10.0.2.1", "n2", false, "b"))
	local.ExternalIPs, local.ExternalLocal = []netip.Addr{ip("203.0.113.5")}, true
	rs := &Ruleset{
		Nodes: []Node{{Name: "n1", Zone: "a"}, {Name: "n2", Zone: "b"}, {Name: "n3"}, {Name: "n4", Zone: "c"}},
		Services: []Service{
			svc("zoned", "10.96.0.1", b("10.0.1.1", "n1", false, "a"), b("10.0.2.1", "n2", false, "b"), b("10.0.2.2", "n2", false, "b", "c")),
			svc("partial", "10.96.0.2", b("10.0.1.1", "n1", false, "a"), b("10.0.2.1", "n2", false)),
			svc("only-b", "10.96.0.3", b("10.0.2.1", "n2", false, "b"), b("10.0.2.2", "n2", false, "b")),
			svc("terminating", "10.96.0.4", b("10.0.1.1", "n1", true, "b"), b("10.0.2.1", "n2", true, "a")),
			local,
			svc("same-node", "10.96.0.6", onNode("10.0.1.1", "n1", "a"), onNode("10.0.2.1", "n2", "b"), onNode("10.0.2.2", "n4", "b")),
		},
	}
	show := func(fs []Frontend) map[string]string {
		out := map[string]string{}
		for _, f := range fs {
			var bs []string
			for _, b := range f.Backends {
				bs = append(bs, b.IP.String())
			}
			out[fmt.Sprintf("%s %s %s", f.Service.Name, f.Addr, f.Scope)] = strings.Join(bs, ",")
		}
		return out
	}
	tests := []struct {
		node string
		want map[string]string
	}{
		{"n1", map[string]string{"zoned 10.96.0.1 inside": "10.0.1.1", "partial 10.96.0.2 inside": "10.0.1.1,10.0.2.1",
			"only-b 10.96.0.3 inside": "10.0.2.1,10.0.2.2", "terminating 10.96.0.4 inside": "10.0.1.1,10.0.2.1",
			"local 10.96.0.5 inside": "10.0.1.1", "local 203.0.113.5 inside": "10.0.1.1", "local 203.0.113.5 outside": "10.0.1.1", "same-node 10.96.0.6 inside": "10.0.1.1"}},
		{"n2", map[string]string{"zoned 10.96.0.1 inside": "10.0.2.1,10.0.2.2", "partial 10.96.0.2 inside": "10.0.1.1,10.0.2.1",
			"only-b 10.96.0.3 inside": "10.0.2.1,10.0.2.2", "terminating 10.96.0.4 inside": "10.0.1.1,10.0.2.1",
			"local 10.96.0.5 inside": "10.0.2.1", "local 203.0.113.5 inside": "10.0.2.1", "local 203.0.113.5 outside": "10.0.2.1", "same-node 10.96.0.6 inside": "10.0.2.1"}},
		// No zone label: hints are ignored.
		{"n3", map[string]string{"zoned 10.96.0.1 inside": "10.0.1.1,10.0.2.1,10.0.2.2", "partial 10.96.0.2 inside": "10.0.1.1,10.0.2.1",
			"only-b 10.96.0.3 inside": "10.0.2.1,10.0.2.2", "terminating 10.96.0.4 inside": "10.0.1.1,10.0.2.1",
			"local 10.96.0.5 inside": "10.0.1.1,10.0.2.1", "local 203.0.113.5 inside": "10.0.1.1,10.0.2.1", "local 203.0.113.5 outside": "",
			"same-node 10.96.0.6 inside": "10.0.1.1,10.0.2.1,10.0.2.2"}},
		{"n4", map[string]string{"zoned 10.96.0.1 inside": "10.0.2.2", "partial 10.96.0.2 inside": "10.0.1.1,10.0.2.1",
			"only-b 10.96.0.3 inside": "10.0.2.1,10.0.2.2", "terminating 10.96.0.4 inside": "10.0.1.1,10.0.2.1",
			"local 10.96.0.5 inside": "10.0.1.1,10.0.2.1", "local 203.0.113.5 inside": "10.0.1.1,10.0.2.1", "local 203.0.113.5 outside": "",
			"same-node 10.96.0.6 inside": "10.0.2.2"}},
		// Shared by nodes: only what does not depend on the zone.
		{"", map[string]string{"partial 10.96.0.2 inside": "10.0.1.1,10.0.2.1", "terminating 10.96.0.4 inside": "10.0.1.1,10.0.2.1"}},
	}
	for _, tt := range tests {
		got := show(rs.Frontends(tt.node))
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("node %q:\n got %v\nwant %v", tt.node, got, tt.want)
		}
	}
}
