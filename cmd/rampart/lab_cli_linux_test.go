package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/lab/fabric"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

// TestLabCLI drives a lab only through the rampart binary, as users and the acceptance checks
// do: up, probe, apply, probe --expect against `policy matrix`, label, flows, metrics,
// explain --live, delete, down.
func TestLabCLI(t *testing.T) {
	netnstest.RequireRoot(t, "ip", "iptables-restore", "ipset")
	dir := t.TempDir()
	bin := rampartBinary(t)
	name := fmt.Sprintf("c%d", rand.Intn(1000000))
	run, must := labCommands(t, bin, name)
	t.Cleanup(func() {
		if out, err := run("lab", "down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		if strings.Contains(string(out), fabric.Prefix(name)) {
			t.Errorf("namespaces left after lab down:\n%s", out)
		}
	})
	base := "../../test/conformance/cases/netpol/base.yaml"
	must("lab", "up", "--nodes", "2", "-f", base)

	var probes []struct {
		From, To, Protocol, Via string
		Port                    int
		Connected               bool
	}
	if err := json.Unmarshal([]byte(must("lab", "probe", "-o", "json")), &probes); err != nil {
		t.Fatal(err)
	}
	if len(probes) != 9*8*6 {
		t.Fatalf("%d probes, want %d", len(probes), 9*8*6)
	}
	for _, p := range probes {
		if !p.Connected || p.Via != "service" {
			t.Fatalf("without policy: %+v", p)
		}
	}

	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-from-team, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}], ports: [{port: serve-80-tcp}, {port: 81, protocol: UDP}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	must("lab", "apply", "-f", policy)
	must("lab", "label", "namespace", "y", "team=blue")

	// What the evaluator says for the same objects, as a probe expectation file.
	labeled := filepath.Join(dir, "labeled.yaml")
	b, _ := os.ReadFile(base)
	if err := os.WriteFile(labeled, []byte(strings.Replace(string(b), "name: y\n  labels:\n    ns: y", "name: y\n  labels:\n    ns: y\n    team: blue", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "policy", "matrix", "-o", "json", "-f", labeled, "-f", policy).Output()
	if err != nil {
		t.Fatal(err)
	}
	expect := filepath.Join(dir, "expect.json")
	if err := os.WriteFile(expect, []byte(strings.ReplaceAll(string(out), `"allowed"`, `"connected"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("lab", "probe", "--via", "pod", "--timeout", "700ms", "--expect", expect, "-o", "json"); err != nil {
		t.Fatalf("kernel disagrees with the evaluator: %v\n%s", err, tail(out))
	}

	// The probes' flow records through the CLI: denied ones from z (not team blue) name the
	// policy; the metrics count them; explain --live finds no disagreement.
	if out, err := run("lab", "probe", "--from", "z/a", "--to", "x/a", "--port", "80", "--protocol", "TCP", "--via", "pod"); err != nil || !strings.Contains(out, "0 of 1 connected") {
		t.Fatalf("z/a -> x/a with the policy: %v\n%s", err, out)
	}
	var denied bool
	for deadline := time.Now().Add(3 * time.Second); !denied && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, line := range strings.Split(strings.TrimSpace(must("lab", "flows", "-o", "json", "--verdict", "denied", "--pod", "x/a", "--policy", "x-from-team")), "\n") {
			var r flow.Record
			if line != "" && json.Unmarshal([]byte(line), &r) == nil && r.Source.Namespace == "z" && r.Policy != nil && r.Policy.Name == "x-from-team" {
				denied = true
			}
		}
	}
	if !denied {
		t.Fatalf("no denied record naming x-from-team:\n%s", must("lab", "flows"))
	}
	if m := must("lab", "metrics"); !strings.Contains(m, "# node ") || !strings.Contains(m, `policy="x-from-team",verdict="denied"`) {
		t.Errorf("lab metrics lack the node headers or the verdict counter:\n%s", tail(m))
	}
	if out, err := exec.Command(bin, "explain", "--live", "--lab", name, "--from", "z/a", "--to", "x/a", "--port", "80").CombinedOutput(); err != nil || !strings.Contains(string(out), "agrees") {
		t.Errorf("explain --live: %v\n%s", err, tail(string(out)))
	}

	must("lab", "delete", "networkpolicy", "x/x-from-team")
	if out, err := run("lab", "probe", "--from", "z/a", "--to", "x/a", "--port", "80", "--protocol", "TCP"); err != nil || !strings.Contains(out, "1 of 1 connected") {
		t.Fatalf("after delete: %v\n%s", err, out)
	}
	// From outside the cluster: a LoadBalancer Service (its address allocated by the lab) with
	// externalTrafficPolicy Local, probed from the external client, keeps the client's address.
	lb := filepath.Join(dir, "lb.yaml")
	if err := os.WriteFile(lb, []byte(`apiVersion: v1
kind: Service
metadata: {name: a-lb, namespace: x}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {pod: a}, ports: [{port: 80}]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	must("lab", "apply", "-f", lb)
	var svcs []struct {
		Name        string
		NodePort    int
		ExternalIPs []string
	}
	if err := json.Unmarshal([]byte(must("lab", "get", "services", "-o", "json")), &svcs); err != nil {
		t.Fatal(err)
	}
	var lbIP string
	for _, s := range svcs {
		if s.Name == "a-lb" && len(s.ExternalIPs) == 1 && s.NodePort >= 30000 {
			lbIP = s.ExternalIPs[0]
		}
	}
	if lbIP == "" {
		t.Fatalf("a-lb has no load-balancer address or node port: %+v", svcs)
	}
	var ext []struct {
		Connected      bool
		Server, Client string
	}
	if err := json.Unmarshal([]byte(must("lab", "probe", "--from", "external", "--to", lbIP, "--port", "80", "-o", "json")), &ext); err != nil {
		t.Fatal(err)
	}
	if len(ext) != 1 || !ext[0].Connected || ext[0].Server != "x/a" || !strings.HasPrefix(ext[0].Client, "172.30.0.250:") {
		t.Errorf("external probe of %s:80: %+v, want x/a answering and seeing 172.30.0.250", lbIP, ext)
	}
	if out, err := run("lab", "probe", "--from", "external", "--to", "x/a", "--port", "80"); err == nil || !strings.Contains(out, "not reachable from outside") {
		t.Errorf("--from external --to a pod: %v\n%s", err, out)
	}

	if out, err := run("lab", "apply", "-f", "/nonexistent.yaml"); err == nil {
		t.Fatalf("apply of a missing file succeeded:\n%s", out)
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// rampartBinary builds the CLI once per test process.
func rampartBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rampart-test-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "rampart")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// labCommands run the rampart binary's commands on lab name ("lab probe ...", "lab exec POD --
// CMD ..."; the lab's --name goes right after the command group, before any "--"): run returns
// the combined output and the error, must fails the test on an error.
func labCommands(t *testing.T, bin, name string) (run func(args ...string) (string, error), must func(args ...string) string) {
	run = func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{args[0], "--name", name}, args[1:]...)...).CombinedOutput()
		return string(out), err
	}
	must = func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("rampart %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	return run, must
}
