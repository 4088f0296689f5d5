package flow_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

const cluster = `
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Service
metadata: {name: svc-b, namespace: x}
spec: {clusterIP: 10.96.0.10, selector: {app: b}, ports: [{port: 8080, targetPort: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
`

func ruleset(t *testing.T) *ir.Ruleset {
	rs, _ := rulesets(t, "")
	return rs
}

// rulesets compiles the cluster plus extra, without and with its staged policies.
func rulesets(t *testing.T, extra string) (enforced, staged *ir.Ruleset) {
	t.Helper()
	objs, err := model.Decode(strings.NewReader(cluster+"\n---\n"+extra), "test", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := model.FromObjects(objs)
	if enforced, err = compile.Compile(c); err == nil {
		staged, err = compile.CompileWith(c, compile.Options{Staged: true})
	}
	if err != nil {
		t.Fatal(err)
	}
	return enforced, staged
}

func TestStagedVerdicts(t *testing.T) {
	rs, srs := rulesets(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: try-egress, namespace: x, annotations: {rampart.io/staged: "true"}}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}]
`)
	if len(rs.PoliciesFor(0, ir.Egress)) != 0 {
		t.Fatal("a staged policy is in the enforced Ruleset")
	}
	r := flow.NewResolver(rs).WithStaged(policy.New(srs))
	tcp := flow.Tuple{Protocol: ir.TCP, Src: netip.MustParseAddrPort("10.0.1.1:40000"), Dst: netip.MustParseAddrPort("10.0.1.2:80")}
	dns := flow.Tuple{Protocol: ir.UDP, Src: netip.MustParseAddrPort("10.0.1.1:40000"), Dst: netip.MustParseAddrPort("10.0.1.2:53")}
	// a's egress is unrestricted now; staged, it would be isolated except for DNS.
	if s := r.Record("n1", &flow.Event{Direction: ir.Egress, Allowed: true, Tuple: tcp}).Staged; s == nil || s.Verdict != flow.Denied ||
		s.Policy == nil || s.Policy.Name != "try-egress" || s.Policy.Rule != nil {
		t.Errorf("TCP from a: staged %+v", s)
	}
	if s := r.Record("n1", &flow.Event{Direction: ir.Egress, Allowed: true, Tuple: dns}).Staged; s == nil || s.Verdict != flow.Allowed ||
		s.Policy == nil || s.Policy.Rule == nil || *s.Policy.Rule != 0 {
		t.Errorf("DNS from a, decided by the staged rule: staged %+v", s)
	}
	// The ingress side is not touched by the staged policy: no staged verdict.
	if s := r.Record("n1", &flow.Event{Direction: ir.Ingress, Allowed: true, Tuple: tcp}).Staged; s != nil {
		t.Errorf("ingress of b: staged %+v, want none", s)
	}
}

func TestResolverNamesWhatDecided(t *testing.T) {
	rs := ruleset(t)
	r := flow.NewResolver(rs)
	tab := flow.NewRuleTable(rs)
	var allowRule *ir.Rule
	for _, tier := range rs.Tiers[ir.Ingress] {
		for i := range tier.Policies {
			if tier.Policies[i].Name == "allow-a" {
				allowRule = &tier.Policies[i].Rules[0]
			}
		}
	}
	id := tab.ID(allowRule)
	if id == 0 || tab.Decider(id).Name != "allow-a" || !tab.Decider(99999).Unresolved || tab.Decider(0).Known {
		t.Fatalf("rule table: id %d -> %+v", id, tab.Decider(id))
	}

	tu := flow.Tuple{Protocol: ir.TCP, Src: netip.MustParseAddrPort("10.0.1.1:40000"), Dst: netip.MustParseAddrPort("10.0.1.2:80")}
	allowed := r.Record("n1", &flow.Event{Direction: ir.Ingress, Allowed: true, Tuple: tu, Decider: tab.Decider(id),
		Service: netip.MustParseAddrPort("10.96.0.10:8080")})
	if allowed.Source.Pod != "a" || allowed.Destination.Pod != "b" || allowed.Policy == nil || allowed.Policy.Name != "allow-a" ||
		allowed.Policy.Rule == nil || *allowed.Policy.Rule != 0 || allowed.Policy.Action != "Allow" ||
		allowed.Destination.Service == nil || allowed.Destination.Service.Name != "svc-b" {
		t.Errorf("allowed record: %+v policy %+v service %+v", allowed, allowed.Policy, allowed.Destination.Service)
	}

	// A denial no rule decided is isolation: the default deny is named, both isolators listed.
	tu.Dst = netip.MustParseAddrPort("10.0.1.2:9090")
	denied := r.Record("n1", &flow.Event{Direction: ir.Ingress, Tuple: tu})
	p := denied.Policy
	if p == nil || p.Name != "default-deny" || p.Rule != nil || p.Action != "Deny" || len(p.IsolatedBy) != 2 {
		t.Fatalf("denied record's policy: %+v", p)
	}
	// No policy selects b for egress: an allowed flow from it names none.
	tu = flow.Tuple{Protocol: ir.UDP, Src: netip.MustParseAddrPort("10.0.1.2:5353"), Dst: netip.MustParseAddrPort("10.0.1.1:53")}
	if rec := r.Record("n1", &flow.Event{Direction: ir.Egress, Allowed: true, Tuple: tu}); rec.Policy != nil || rec.TCPFlags != "" {
		t.Errorf("default-allowed record: %+v", rec)
	}
}

func TestExplainLiveFlagsDisagreements(t *testing.T) {
	rs := ruleset(t)
	ev := policy.New(rs)
	f := policy.Flow{Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddr("10.0.1.2"), Protocol: ir.TCP, Port: 80}
	rule := 0
	rec := func(dir, verdict string, p *flow.PolicyRef) flow.Record {
		return flow.Record{Source: flow.Endpoint{IP: "10.0.1.1", Port: 40000}, Destination: flow.Endpoint{IP: "10.0.1.2", Port: 80},
			Protocol: "TCP", Direction: dir, Verdict: verdict, Policy: p}
	}
	recs := []flow.Record{
		rec("ingress", flow.Allowed, &flow.PolicyRef{Kind: "NetworkPolicy", Namespace: "x", Name: "allow-a", Rule: &rule}), // agrees
		rec("egress", flow.Allowed, nil), // agrees: no egress policy
		rec("ingress", flow.Denied, &flow.PolicyRef{Kind: "NetworkPolicy", Namespace: "x", Name: "default-deny"}),        // wrong verdict
		rec("ingress", flow.Allowed, &flow.PolicyRef{Kind: "NetworkPolicy", Namespace: "x", Name: "other", Rule: &rule}), // wrong rule
	}
	other := rec("ingress", flow.Allowed, nil)
	other.Destination.Port = 81 // another flow: not compared
	live := flow.ExplainLive(ev, time.Time{}, f, append(recs, other))
	if len(live.Records) != 4 || live.Disagreements != 2 || !live.Records[0].Agrees || !live.Records[1].Agrees ||
		live.Records[2].Agrees || live.Records[3].Agrees || live.Records[3].Why == "" {
		t.Errorf("live: %+v", live.Records)
	}
	// Connections that began before the state in force came in are shown, not counted.
	later := flow.ExplainLive(ev, time.Now(), f, recs)
	if later.Disagreements != 0 || !later.Records[2].Earlier || later.Records[2].Agrees {
		t.Errorf("records of an earlier state: %+v", later)
	}
}
