package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const cnpCluster = `apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Pod
metadata: {name: x, namespace: a}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: y, namespace: a}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.2}
`

// No silent gaps: policy matrix (and every command reading manifests) fails on a policy it
// would not enforce as written, naming it, unless --skip-unsupported.
func TestPolicyCommandsRejectWhatTheyWouldNotEnforce(t *testing.T) {
	write := tempWriter(t)
	cluster := write("cluster.yaml", cnpCluster)
	deny := write("deny.yaml", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
`)
	out, err := runCLI(t, "policy", "matrix", "-f", cluster, "-f", deny)
	if err != nil || !strings.Contains(out, "0 of 2 allowed") {
		t.Fatalf("matrix with a ClusterNetworkPolicy deny: %v\n%s", err, out)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"unknown tier", strings.Replace(mustRead(t, deny), "tier: Admin", "tier: Platform", 1), `spec.tier: Unsupported value: "Platform"`},
		{"unknown kind", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: a}\nspec: {}\n", "CiliumNetworkPolicy a/c"},
		{"unknown version", strings.Replace(mustRead(t, deny), "v1alpha2", "v1alpha9", 1), "policy.networking.k8s.io/v1alpha9 ClusterNetworkPolicy"},
		{"domain names", strings.Replace(mustRead(t, deny), "ingress: [{action: Deny, from: [{namespaces: {}}]}]", "egress: [{action: Deny, to: [{domainNames: [example.com]}]}]", 1), "domainNames"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.body)
			for _, cmd := range [][]string{{"policy", "matrix"}, {"policy", "validate"}, {"explain", "--from", "a/x", "--to", "a/y", "--port", "80"}} {
				out, err := runCLI(t, append(cmd, "-f", cluster, "-f", p)...)
				if err == nil || !strings.Contains(err.Error()+out, tc.want) {
					t.Errorf("%v: err %v, output %q; want a failure naming %q", cmd, err, out, tc.want)
				}
			}
		})
	}
	// --skip-unsupported goes on without the unknown kind, and compiles domainNames fail-closed:
	// a Deny rule with a domain peer denies every peer.
	kind := write("kind.yaml", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: a}\nspec: {}\n")
	if out, err := runCLI(t, "policy", "matrix", "--skip-unsupported", "-f", cluster, "-f", kind); err != nil || !strings.Contains(out, "2 of 2 allowed") {
		t.Fatalf("--skip-unsupported with an unknown kind: %v\n%s", err, out)
	}
	domains := write("domains.yaml", strings.Replace(mustRead(t, deny), "ingress: [{action: Deny, from: [{namespaces: {}}]}]", "egress: [{action: Pass, to: [{domainNames: [example.com]}]}]", 1))
	if out, err := runCLI(t, "policy", "matrix", "--skip-unsupported", "-f", cluster, "-f", domains); err != nil || !strings.Contains(out, "0 of 2 allowed") {
		t.Fatalf("--skip-unsupported with domainNames on a Pass rule: %v\n%s", err, out)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tempWriter returns a function writing files into a temporary directory, returning each path.
func tempWriter(t *testing.T) func(name, body string) string {
	dir := t.TempDir()
	return func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// Quarantines and blocking feeds decide before policy on the nodes, and so in explain and
// matrix: a listed pod is cut off both ways, naming the feed; a quarantined pod reaches only
// what quarantine allows (DNS by default, then policy decides) and nothing reaches it.
func TestExplainThreats(t *testing.T) {
	write := tempWriter(t)
	cluster := write("cluster.yaml", cnpCluster)
	list := write("list.netset", "# test\n10.0.0.2\n0.0.0.0/0\n")
	td := write("td.yaml", "apiVersion: rampart.io/v1alpha1\nkind: ThreatDefense\nmetadata: {name: default}\nspec:\n  feeds:\n  - {name: listed, file: "+list+", action: block}\n")
	explain := func(files []string, from, to, port, proto string) string {
		t.Helper()
		args := []string{"explain", "--from", from, "--to", to, "--port", port, "--protocol", proto}
		for _, f := range files {
			args = append(args, "-f", f)
		}
		out, err := runCLI(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return out
	}
	for _, tc := range []struct {
		files               []string
		from, to, port, pr  string
		verdict, reasonPart string
	}{
		{[]string{cluster}, "a/x", "a/y", "80", "TCP", "ALLOWED", "allowed by default"},
		{[]string{cluster, td}, "a/x", "a/y", "80", "TCP", "DENIED", "is in 10.0.0.2/32, blocked by threat feed listed"},
		{[]string{cluster, td}, "a/y", "a/x", "80", "TCP", "DENIED", "the source pod a/y (10.0.0.2) is in 10.0.0.2/32"},
		// 0.0.0.0/0 would cut the cluster off: refused, as the agents refuse it.
		{[]string{cluster, td}, "a/x", "198.51.100.1", "443", "TCP", "ALLOWED", "198.51.100.1 (outside the cluster's pods) is not a pod under policy"},
	} {
		out := explain(tc.files, tc.from, tc.to, tc.port, tc.pr)
		if !strings.HasPrefix(out, tc.verdict) || !strings.Contains(out, tc.reasonPart) {
			t.Errorf("%s -> %s %s/%s with %d files: want %s because %q, got\n%s", tc.from, tc.to, tc.port, tc.pr, len(tc.files), tc.verdict, tc.reasonPart, out)
		}
	}
	if out, err := runCLI(t, "policy", "matrix", "-f", cluster, "-f", td); err != nil || !strings.Contains(out, "0 of 2 allowed") {
		t.Errorf("matrix with the server listed: %v\n%s", err, out)
	}
	// A quarantine, with no ThreatDefense at all:
	quarantined := write("quarantined.yaml", strings.Replace(cnpCluster, "metadata: {name: x, namespace: a}", "metadata: {name: x, namespace: a, annotations: {rampart.io/quarantine: \"true\"}}", 1))
	for _, tc := range []struct {
		from, to, port, pr  string
		verdict, reasonPart string
	}{
		{"a/x", "a/y", "80", "TCP", "DENIED", "a/x is quarantined (rampart.io/quarantine), and may only reach 53/UDP, 53/TCP"},
		{"a/x", "a/y", "53", "UDP", "ALLOWED", "allowed by default"},
		{"a/y", "a/x", "80", "TCP", "DENIED", "a/x is quarantined (rampart.io/quarantine): nothing may connect to it"},
	} {
		out := explain([]string{quarantined}, tc.from, tc.to, tc.port, tc.pr)
		if !strings.HasPrefix(out, tc.verdict) || !strings.Contains(out, tc.reasonPart) {
			t.Errorf("quarantine: %s -> %s %s/%s: want %s because %q, got\n%s", tc.from, tc.to, tc.port, tc.pr, tc.verdict, tc.reasonPart, out)
		}
	}
	// A feed that cannot be read fails, as it fails the agents' configuration.
	missing := write("missing.yaml", strings.Replace(mustRead(t, td), list, list+".gone", 1))
	if out, err := runCLI(t, "explain", "--from", "a/x", "--to", "a/y", "--port", "80", "-f", cluster, "-f", missing); err == nil || !strings.Contains(err.Error(), "list.netset.gone") {
		t.Errorf("an unreadable feed: err %v\n%s", err, out)
	}
}
