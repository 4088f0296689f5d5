package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/vuln/report"
)

const observedFlows = `{"source":{"namespace":"frontend","pod":"web-0","ip":"10.244.1.10","port":40000},"destination":{"namespace":"backend","pod":"api-0","ip":"10.244.1.20","port":8080},"protocol":"TCP","verdict":"allowed"}
{"source":{"namespace":"frontend","pod":"web-1","ip":"10.244.2.10","port":40001},"destination":{"namespace":"backend","pod":"api-1","ip":"10.244.2.20","port":8080},"protocol":"TCP","verdict":"allowed"}

{"source":{"namespace":"backend","pod":"api-0","ip":"10.244.1.20","port":40002},"destination":{"namespace":"db","pod":"postgres-0","ip":"10.244.1.30","port":5432},"protocol":"TCP","verdict":"allowed"}
{"source":{"ip":"203.0.113.9","port":40003},"destination":{"namespace":"frontend","pod":"web-0","ip":"10.244.1.10","port":8080},"protocol":"TCP","verdict":"allowed"}
{"source":{"namespace":"frontend","pod":"web-0","ip":"10.244.1.10","port":40004},"destination":{"namespace":"db","pod":"postgres-0","ip":"10.244.1.30","port":5432},"protocol":"TCP","verdict":"denied"}
`

// The loop without a lab: recommend from observed flows, check the proposal with policy diff,
// and see what it does to the exposure of the images' findings.
func TestRecommendDiffWhatIf(t *testing.T) {
	write := tempWriter(t)
	flows := write("flows.jsonl", observedFlows)
	out, err := runCLI(t, "policy", "recommend", "-f", "../../examples/cluster", "--flows", flows)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `rampart.io/staged: "true"`) || !strings.Contains(out, "name: rampart-api") {
		t.Fatalf("recommendation:\n%s", out)
	}
	proposal := write("proposal.yaml", out)
	if v, err := runCLI(t, "policy", "validate", "-f", proposal); err != nil || !strings.Contains(v, "staged, not enforced") {
		t.Fatalf("validate: %v\n%s", err, v)
	}
	asJSON, err := runCLI(t, "policy", "recommend", "-f", "../../examples/cluster", "--flows", flows, "-o", "json", "--enforce")
	if err != nil || strings.Contains(asJSON, "rampart.io/staged") {
		t.Fatalf("recommend -o json --enforce: %v\n%s", err, asJSON)
	}
	if v, err := runCLI(t, "policy", "validate", "-f", write("proposal.json", asJSON)); err != nil {
		t.Fatalf("validate the JSON List: %v\n%s", err, v)
	}

	// No observed flow breaks; the flows nobody made close.
	d, err := runCLI(t, "policy", "diff", "-f", "../../examples/cluster", "--proposed", proposal, "--flows", flows)
	if err != nil || !strings.Contains(d, "5 observed flows compared: 1 change verdict (0 opened, 1 closed), 0 would break") {
		t.Fatalf("diff: %v\n%s", err, d)
	}
	// Without records every pair allowed now and closed by the proposal counts as broken.
	_, err = runCLI(t, "policy", "diff", "-f", "../../examples/cluster", "--proposed", proposal, "-o", "json")
	if err == nil || !strings.Contains(err.Error(), "pod pair(s) allowed now") {
		t.Fatalf("diff without flows: %v", err)
	}
	// A proposal that breaks an observed flow fails, naming it.
	broken := write("broken.jsonl", observedFlows+`{"source":{"ip":"10.244.1.10"},"destination":{"ip":"10.244.1.30","port":5432},"protocol":"TCP","verdict":"allowed"}`+"\n")
	d, err = runCLI(t, "policy", "diff", "-f", "../../examples/cluster", "--proposed", proposal, "--flows", broken)
	if err == nil || !strings.Contains(err.Error(), "would deny 1 observed allowed flow(s)") ||
		!strings.Contains(d, "frontend/web-0") || !strings.Contains(d, "BREAKS") {
		t.Fatalf("diff of a breaking proposal: %v\n%s", err, d)
	}

	// What-if exposure: every image scanned from one tarball with known vulnerabilities.
	db, tarball := scanFixture(t)
	args := []string{"scan", "cluster", "--db", db, "-f", "../../examples/cluster", "--no-pull", "-o", "json", "--with-policies", proposal}
	for _, img := range []string{"web", "api", "postgres", "coredns", "prometheus"} {
		args = append(args, "--image", "registry.example/"+img+":1.0="+tarball)
	}
	s, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("scan --with-policies: %v\n%s", err, s)
	}
	var r report.Cluster
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"registry.example/api:1.0":        "internet -> 2 pods (frontend/web-0, frontend/web-1)",
		"registry.example/postgres:1.0":   "internet -> 2 pods (backend/api-0, backend/api-1)",
		"registry.example/prometheus:1.0": "internet -> none",
		"registry.example/coredns:1.0":    "internet -> internet", // kube-system is not covered unless named
	}
	for _, f := range r.Findings {
		if w, ok := want[f.Image]; ok && f.ExposureChange != w {
			t.Errorf("%s %s: %q, want %q", f.Image, f.ID, f.ExposureChange, w)
		}
		if f.Image == "registry.example/api:1.0" && (f.ExposureBefore != "internet" || f.Exposure != "pods") {
			t.Errorf("api finding: before %s, after %s", f.ExposureBefore, f.Exposure)
		}
	}
}

func TestRecommendErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(strings.SplitN(observedFlows, "\n", 2)[0]+"\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "recommend", "-f", "../../examples/cluster"}, "give the flow records with --flows"},
		{[]string{"policy", "recommend", "--flows", bad}, "give the cluster's objects with one of"},
		{[]string{"policy", "recommend", "-f", "../../examples/cluster", "--flows", bad}, "line 2: not a flow record"},
		{[]string{"policy", "recommend", "-f", "../../examples/cluster", "--flows", bad, "-o", "xml"}, "--output must be yaml or json"},
		{[]string{"policy", "recommend", "-f", "../../examples/cluster", "--flows", bad, "--namespace", "nope"}, "line 2"},
		{[]string{"policy", "diff", "-f", "../../examples/cluster"}, "--proposed"},
		{[]string{"policy", "diff", "-f", "../../examples/cluster", "--proposed", "../../examples/cluster/10-pods.yaml"}, "a proposal holds only policies"},
		{[]string{"scan", "cluster", "-f", "../../examples/cluster", "--replace"}, "--replace needs --with-policies"},
	} {
		if _, err := runCLI(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}
