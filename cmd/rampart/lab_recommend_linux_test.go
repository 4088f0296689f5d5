package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/vuln/report"
)

// TestLabRecommend runs the loop from exposure to a fix in a lab, on both dataplanes, through
// the binary: the example application's traffic along its request path is observed (flow
// records), policy recommend proposes, policy diff finds nothing it breaks, lab apply enforces;
// then every observed flow still connects through the kernel, unobserved ones are refused, the
// kernel agrees with the evaluator on every pair, and the images' findings drop from internet.
func TestLabRecommend(t *testing.T) {
	netnstest.RequireRoot(t, "ip", "iptables-restore", "ipset")
	bin := rampartBinary(t)
	db, tarball := scanFixture(t)
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) { labRecommend(t, bin, dp, db, tarball) })
	}
}

// path is one hop of the example application's traffic, as a probe.
type path struct {
	from, to, via string
	port          int
	proto         string
}

func (p path) args() []string {
	return []string{"lab", "probe", "--from", p.from, "--to", p.to, "--port", fmt.Sprint(p.port), "--protocol", p.proto, "--via", p.via, "--timeout", "700ms"}
}

func labRecommend(t *testing.T, bin, dp, db, tarball string) {
	dir := t.TempDir()
	name := fmt.Sprintf("r%d", rand.Intn(1000000))
	run, _ := labCommands(t, bin, name)
	// Commands reading a lab name with --lab take no --name.
	runLab := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out) + stderr.String(), err
		}
		return string(out), nil
	}
	must := func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, tail(out))
		}
		return out
	}
	t.Cleanup(func() {
		if out, err := run("lab", "down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	must(run("lab", "up", "--nodes", "2", "--dataplane", dp, "-f", "../../examples/cluster"))
	scan := func() report.Cluster {
		t.Helper()
		args := []string{"scan", "cluster", "--lab", name, "--db", db, "--no-pull", "-o", "json"}
		for _, img := range []string{"web", "api", "postgres", "coredns", "prometheus"} {
			args = append(args, "--image", "registry.example/"+img+":1.0="+tarball)
		}
		var r report.Cluster
		if err := json.Unmarshal([]byte(must(runLab(args...))), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	exposureOf := func(r report.Cluster, image string) string {
		for _, f := range r.Findings {
			if f.Image == image {
				return string(f.Exposure)
			}
		}
		return "no finding"
	}
	if e := exposureOf(scan(), "registry.example/api:1.0"); e != "internet" {
		t.Fatalf("api before any policy: exposure %s, want internet", e)
	}

	// The application's request path (the web tier reaches the API through its Service).
	observed := []path{
		{"frontend/web-0", "backend/api-0", "service", 8080, "TCP"},
		{"frontend/web-1", "backend/api-1", "pod", 8080, "TCP"},
		{"backend/api-0", "db/postgres-0", "pod", 5432, "TCP"},
		{"backend/api-1", "db/postgres-0", "pod", 5432, "TCP"},
		{"monitoring/prometheus-0", "backend/api-0", "pod", 9090, "TCP"},
		{"frontend/web-0", "kube-system/coredns-0", "pod", 53, "UDP"},
	}
	unobserved := []path{
		{"frontend/web-0", "db/postgres-0", "pod", 5432, "TCP"},
		{"monitoring/prometheus-0", "frontend/web-1", "pod", 8080, "TCP"},
		{"backend/api-1", "frontend/web-0", "pod", 8080, "TCP"},
		{"db/postgres-0", "backend/api-0", "pod", 9090, "TCP"},
		{"frontend/web-1", "monitoring/prometheus-0", "pod", 9091, "TCP"},
	}
	connects := func(p path) bool {
		out, err := run(p.args()...)
		return err == nil && strings.Contains(out, "1 of 1 connected")
	}
	// A probe starved on 2 cores is retried: a refused one stays refused.
	connectsRetried := func(p path) bool {
		for i := 0; i < 3; i++ {
			if connects(p) {
				return true
			}
		}
		return false
	}
	for _, p := range observed {
		if !connectsRetried(p) {
			t.Fatalf("before any policy, %+v does not connect", p)
		}
	}
	// Every observed hop has its allowed record before recommending from them.
	flows := filepath.Join(dir, "flows.json")
	var records string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		records = must(run("lab", "flows", "-o", "json", "--verdict", "allowed"))
		missing := missingHops(records, observed)
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no allowed flow record for %v:\n%s", missing, tail(records))
		}
	}
	if err := os.WriteFile(flows, []byte(records), 0o644); err != nil {
		t.Fatal(err)
	}

	proposal := filepath.Join(dir, "proposal.yaml")
	if err := os.WriteFile(proposal, []byte(must(runLab("policy", "recommend", "--lab", name, "--enforce"))), 0o644); err != nil {
		t.Fatal(err)
	}
	must(runLab("policy", "validate", "-f", proposal))
	if out := must(runLab("policy", "diff", "--lab", name, "--proposed", proposal, "--flows", flows)); !strings.Contains(out, " 0 would break") {
		t.Fatalf("diff:\n%s", out)
	}
	must(run("lab", "apply", "-f", proposal))

	for _, p := range observed {
		if !connectsRetried(p) {
			t.Errorf("observed %+v no longer connects with the recommendation\n%s", p, must(runLab("explain", "--live", "--lab", name, "--from", p.from, "--to", p.to, "--port", fmt.Sprint(p.port), "--protocol", p.proto)))
		}
	}
	for _, p := range unobserved {
		if connects(p) {
			t.Errorf("unobserved %+v connects with the recommendation", p)
		}
	}
	// The kernel agrees with the evaluator on every pair and declared port.
	m, err := exec.Command(bin, "policy", "matrix", "-o", "json", "-f", "../../examples/cluster", "-f", proposal).Output()
	if err != nil {
		t.Fatal(err)
	}
	expect := filepath.Join(dir, "expect.json")
	if err := os.WriteFile(expect, []byte(strings.ReplaceAll(string(m), `"allowed"`, `"connected"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	// One retry for probes starved on 2 cores.
	for i := 0; ; i++ {
		out, err := run("lab", "probe", "--via", "pod", "--timeout", "700ms", "--expect", expect, "-o", "json")
		if err == nil {
			break
		}
		if i == 1 {
			t.Errorf("kernel disagrees with the evaluator: %v\n%s", err, tail(out))
			break
		}
	}
	after := scan()
	for _, img := range []string{"registry.example/api:1.0", "registry.example/postgres:1.0", "registry.example/web:1.0"} {
		if e := exposureOf(after, img); e != "pods" && e != "none" && !(img == "registry.example/web:1.0" && e == "external") {
			t.Errorf("%s with the recommendation: exposure %s, want pods or none", img, e)
		}
	}
}

// missingHops lists the hops of want with no allowed record between their pods, on their port.
func missingHops(records string, want []path) []string {
	seen := map[string]bool{}
	for _, line := range strings.Split(records, "\n") {
		var r flow.Record
		if json.Unmarshal([]byte(line), &r) != nil || r.Verdict != flow.Allowed {
			continue
		}
		seen[fmt.Sprintf("%s/%s %s/%s %d", r.Source.Namespace, r.Source.Pod, r.Destination.Namespace, r.Destination.Pod, r.Destination.Port)] = true
	}
	var out []string
	for _, p := range want {
		k := fmt.Sprintf("%s %s %d", p.from, p.to, p.port)
		if p.via == "service" {
			// Balanced to either replica of the destination's workload.
			base := strings.TrimSuffix(p.to, "0")
			if seen[fmt.Sprintf("%s %s0 %d", p.from, base, p.port)] || seen[fmt.Sprintf("%s %s1 %d", p.from, base, p.port)] {
				continue
			}
		}
		if !seen[k] {
			out = append(out, k)
		}
	}
	return out
}
