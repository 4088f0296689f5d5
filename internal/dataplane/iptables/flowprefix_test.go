package iptables

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

func TestFlowPrefixes(t *testing.T) {
	long := strings.Repeat("n", 60)
	rs := &ir.Ruleset{}
	rs.Tiers[ir.Ingress] = []ir.Tier{
		{Kind: ir.TierAdmin, Policies: []ir.Policy{{Tier: ir.TierAdmin, Name: "admin", Direction: ir.Ingress,
			Rules: []ir.Rule{{Index: 0, Action: ir.Pass}, {Index: 1, Name: "deny-all", Action: ir.Deny}}}}},
		{Kind: ir.TierNetworkPolicy, Policies: []ir.Policy{{Tier: ir.TierNetworkPolicy, Namespace: "ns", Name: long, Direction: ir.Ingress,
			Rules: []ir.Rule{{Index: 0, Action: ir.Allow}}}}},
	}
	rs.Tiers[ir.Egress] = []ir.Tier{
		{Kind: ir.TierBaseline, Policies: []ir.Policy{{Tier: ir.TierBaseline, Name: "default", Direction: ir.Egress,
			Rules: []ir.Rule{{Index: 0, Action: ir.Allow}}}}},
	}
	tab := newPrefixTable(rs, nil, nil)
	admin, np, base := &rs.Tiers[ir.Ingress][0].Policies[0], &rs.Tiers[ir.Ingress][1].Policies[0], &rs.Tiers[ir.Egress][0].Policies[0]
	for _, tc := range []struct {
		prefix  string
		dir     ir.Direction
		allowed bool
		kind    ir.TierKind
		name    string
		rule    int
		known   bool
	}{
		{rulePrefix(admin, &admin.Rules[1]), ir.Ingress, false, ir.TierAdmin, "admin", 1, true},
		{rulePrefix(np, &np.Rules[0]), ir.Ingress, true, ir.TierNetworkPolicy, long, 0, true},
		{rulePrefix(base, &base.Rules[0]), ir.Egress, true, ir.TierBaseline, "default", 0, true},
		{isolationPrefix(ir.Egress), ir.Egress, false, 0, "", 0, false},
		{defaultPrefix(ir.Ingress), ir.Ingress, true, 0, "", 0, false},
	} {
		if len(tc.prefix) > maxPrefix {
			t.Errorf("prefix %q is longer than NFLOG allows", tc.prefix)
		}
		dir, allowed, d, ok := decodePrefix(tc.prefix, tab)
		if !ok || dir != tc.dir || allowed != tc.allowed || d.Known != tc.known || (tc.known && (d.Tier != tc.kind || d.Name != tc.name || d.Rule != tc.rule)) {
			t.Errorf("%q: decoded dir %v allowed %v %+v ok %v", tc.prefix, dir, allowed, d, ok)
		}
	}
	if p := rulePrefix(np, &np.Rules[0]); !strings.Contains(p, "#") {
		t.Errorf("a long name is not hashed: %q", p)
	}
	if _, _, d, ok := decodePrefix(rulePrefix(np, &np.Rules[0])); !ok || !d.Unresolved {
		t.Errorf("a hashed name without its table: %+v", d)
	}
	if _, _, d, _ := decodePrefix("DIN3|gone/policy"); !d.Known || d.Namespace != "gone" || d.Name != "policy" || d.Rule != 3 {
		t.Errorf("a prefix of policies no longer programmed is named as written: %+v", d)
	}
	for _, bad := range []string{"", "x", "AIQ1|a", "AIN|a", "AINx|a", "DI"} {
		if _, _, _, ok := decodePrefix(bad, tab); ok {
			t.Errorf("%q decoded", bad)
		}
	}
}

// TestFrontendMarks: each Service frontend the NAT translates gets its own chain marking the
// packet with the frontend's id, and a packet's mark resolves to the frontend only when the
// frontend translates to the packet's destination, in the newest table that does.
func TestFrontendMarks(t *testing.T) {
	svc := `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  clusterIP: 10.96.0.10
  selector: {role: even}
  ports: [{name: web, port: 80, targetPort: 8000}, {name: dns, port: 53, protocol: UDP, targetPort: 8000}]
`
	spec, err := Render(cluster(t, 4, svc), allLocal(4))
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Frontends) != 2 {
		t.Fatalf("frontends %+v, want web's two ports", spec.Frontends)
	}
	marks := map[uint32]bool{}
	for _, c := range spec.Tables["nat"] {
		if strings.HasPrefix(c.Name, ChainPrefix+"F-") {
			var id, mask uint32
			if _, err := fmt.Sscanf(c.Rules[0], "-j MARK --set-xmark %v/%v", &id, &mask); err != nil || mask != markFront || len(c.Rules) != 2 {
				t.Fatalf("frontend chain %s: %q", c.Name, c.Rules)
			}
			marks[id] = true
		}
	}
	tcp := flow.Tuple{Protocol: ir.TCP, Dst: netip.MustParseAddrPort("10.0.0.1:8000")}
	for id, f := range spec.Frontends {
		if !marks[id] {
			t.Errorf("frontend %d (%+v) is marked by no chain", id, f)
		}
		got, ok := frontend(markAllow|id, tcp, newPrefixTable(nil, spec.Frontends, nil))
		if want := f.Protocol == ir.TCP; ok != want || (ok && got != netip.MustParseAddrPort("10.96.0.10:80")) {
			t.Errorf("mark %d resolves to %v %v", id, got, ok)
		}
	}
	// A mark of another render: the frontend with that id there translates elsewhere.
	other := map[uint32]MarkedFrontend{}
	for id := range spec.Frontends {
		other[id] = MarkedFrontend{Addr: netip.MustParseAddrPort("10.96.0.99:1"), Protocol: ir.TCP, Backends: map[netip.AddrPort]bool{}}
	}
	cur, prev := newPrefixTable(nil, other, nil), newPrefixTable(nil, spec.Frontends, nil)
	for id, f := range spec.Frontends {
		if got, ok := frontend(id, tcp, cur, prev); ok != (f.Protocol == ir.TCP) || ok && got != netip.MustParseAddrPort("10.96.0.10:80") {
			t.Errorf("mark %d resolves to %v, not the previous render's frontend", id, got)
		}
	}
	if _, ok := frontend(markAllow, tcp, prev); ok {
		t.Error("a packet without a frontend id resolves")
	}
	tcp.Dst = netip.MustParseAddrPort("10.0.0.2:8000") // p1: odd, not web's
	for id := range spec.Frontends {
		if got, ok := frontend(id, tcp, prev); ok {
			t.Errorf("mark %d resolves to %v for a destination it does not translate to", id, got)
		}
	}
}
