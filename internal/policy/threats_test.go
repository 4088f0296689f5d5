package policy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

func TestThreats(t *testing.T) {
	ev := evaluator(t, "").WithThreats(&policy.Threats{
		Blocked: []policy.Block{
			{Prefix: netip.MustParsePrefix("10.0.2.0/24"), By: "threat feed wide"},
			{Prefix: netip.MustParsePrefix("10.0.2.2/32"), By: "threat feed narrow"},
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), By: "an automatic block"},
		},
		Quarantined:     map[netip.Addr]bool{netip.MustParseAddr("10.0.1.2"): true},
		QuarantineAllow: []policy.PortProto{{Port: 53, Protocol: ir.UDP}},
	})
	a := netip.MustParseAddr
	for _, tc := range []struct {
		src, dst     string
		port         uint16
		proto        ir.Protocol
		allowed      bool
		egress, ingr policy.Decider
		reason       string
	}{
		// The longest listed prefix names what blocked it, whichever end is listed.
		{"10.0.1.1", "10.0.2.2", 80, ir.TCP, false, policy.DecidedBlocked, policy.DecidedBlocked, "threat feed narrow"},
		{"10.0.2.1", "10.0.1.1", 80, ir.TCP, false, policy.DecidedBlocked, policy.DecidedBlocked, "threat feed wide"},
		{"203.0.113.9", "10.0.1.1", 80, ir.TCP, false, policy.DecidedBlocked, policy.DecidedBlocked, "an automatic block"},
		// A quarantined pod sends only to the allowed ports, and policy decides those.
		{"10.0.1.2", "10.0.1.1", 80, ir.TCP, false, policy.DecidedQuarantine, policy.DecidedDefault, "may only reach 53/UDP"},
		{"10.0.1.2", "10.0.1.1", 53, ir.UDP, true, policy.DecidedDefault, policy.DecidedDefault, ""},
		{"10.0.1.2", "10.0.1.1", 53, ir.TCP, false, policy.DecidedQuarantine, policy.DecidedDefault, "may only reach 53/UDP"},
		{"10.0.1.1", "10.0.1.2", 53, ir.UDP, false, policy.DecidedDefault, policy.DecidedQuarantine, "nothing may connect to it"},
		// Unlisted, unquarantined: policy alone; and a pod's traffic to itself never leaves it.
		{"10.0.1.1", "198.51.100.1", 443, ir.TCP, true, policy.DecidedDefault, policy.DecidedNotSubject, ""},
		{"10.0.2.2", "10.0.2.2", 80, ir.TCP, true, policy.DecidedSelfTraffic, policy.DecidedSelfTraffic, ""},
	} {
		d := ev.Verdict(policy.Flow{Src: a(tc.src), Dst: a(tc.dst), Port: tc.port, Protocol: tc.proto})
		if d.Allowed != tc.allowed || d.Egress.DecidedBy != tc.egress || d.Ingress.DecidedBy != tc.ingr ||
			!strings.Contains(d.Egress.Reason+" "+d.Ingress.Reason, tc.reason) {
			t.Errorf("%s -> %s %d/%s: allowed %v, egress %s, ingress %s (%q / %q); want %v, %s, %s, %q",
				tc.src, tc.dst, tc.port, tc.proto, d.Allowed, d.Egress.DecidedBy, d.Ingress.DecidedBy, d.Egress.Reason, d.Ingress.Reason,
				tc.allowed, tc.egress, tc.ingr, tc.reason)
		}
	}
	// Without threats the same evaluator's flows are policy's alone.
	if d := evaluator(t, "").Verdict(policy.Flow{Src: a("10.0.1.1"), Dst: a("10.0.2.2"), Port: 80, Protocol: ir.TCP}); !d.Allowed {
		t.Fatalf("no threats: %+v", d)
	}
}
