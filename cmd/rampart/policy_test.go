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
