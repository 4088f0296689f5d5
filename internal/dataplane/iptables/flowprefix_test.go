package iptables

import (
	"strings"
	"testing"

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
	tab := newPrefixTable(rs, nil)
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
