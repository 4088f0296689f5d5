package agent

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

// flowPlane is a dataplane that reports flows (none here).
type flowPlane struct{}

func (flowPlane) Sync(context.Context, *ir.Ruleset) error { return nil }
func (flowPlane) Close() error                            { return nil }
func (flowPlane) ReadFlows(ctx context.Context, _ flow.Sink) error {
	<-ctx.Done()
	return nil
}

// TestVerdictSeriesOfDeletedPolicies: the verdict counter's series go with their policy.
func TestVerdictSeriesOfDeletedPolicies(t *testing.T) {
	reg := prometheus.NewRegistry()
	f, err := newFlows(Config{Node: "n1"}, flowPlane{}, reg)
	if err != nil || f == nil {
		t.Fatalf("newFlows: %v %v", f, err)
	}
	pol := ir.Policy{Tier: ir.TierNetworkPolicy, Namespace: "x", Name: "p", Direction: ir.Ingress, Rules: []ir.Rule{{Index: 0}}}
	with := &ir.Ruleset{}
	with.Tiers[ir.Ingress] = []ir.Tier{{Kind: ir.TierNetworkPolicy, Policies: []ir.Policy{pol}}}
	with.Index()
	f.setResolver(flow.NewResolver(with))
	tu := flow.Tuple{Protocol: ir.TCP, Src: netip.MustParseAddrPort("10.0.0.1:1000"), Dst: netip.MustParseAddrPort("10.0.0.2:80")}
	p := &with.Tiers[ir.Ingress][0].Policies[0]
	f.count(flow.Event{Direction: ir.Ingress, Allowed: true, Tuple: tu, Decider: flow.DeciderOf(p, &p.Rules[0])})
	f.count(flow.Event{Direction: ir.Egress, Allowed: true, Tuple: tu}) // no policy: kind none
	if n := testutil.CollectAndCount(f.verdicts); n != 2 {
		t.Fatalf("%d series, want 2", n)
	}
	without := &ir.Ruleset{}
	without.Index()
	f.setResolver(flow.NewResolver(without))
	want := `
# HELP rampart_policy_verdicts_total Policy decisions on new connections and denied packets, by the policy that decided (kind none: no policy selects the pod).
# TYPE rampart_policy_verdicts_total counter
rampart_policy_verdicts_total{direction="egress",kind="none",namespace="",policy="",verdict="allowed"} 1
`
	if err := testutil.CollectAndCompare(f.verdicts, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
