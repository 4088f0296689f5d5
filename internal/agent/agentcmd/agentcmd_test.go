package agentcmd

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/rampart-sec/rampart/deploy"
	"github.com/rampart-sec/rampart/internal/dataplane"
)

func TestAgentFlagsCheck(t *testing.T) {
	ok := agentFlags{nodeName: "n1", services: "rampart"}
	with := func(mod func(*agentFlags)) agentFlags { f := ok; mod(&f); return f }
	for _, tc := range []struct {
		name string
		f    agentFlags
		kind dataplane.Kind
		want string // "" when valid
	}{
		{"iptables", ok, dataplane.KindIPTables, ""},
		{"ebpf with cgroup", with(func(f *agentFlags) { f.cgroup = "/sys/fs/cgroup/unified/pods" }), dataplane.KindEBPF, ""},
		{"auto with cgroup: checked once picked", with(func(f *agentFlags) { f.cgroup = "/x" }), dataplane.KindAuto, ""},
		{"iptables beside kube-proxy", with(func(f *agentFlags) { f.services = "kube-proxy" }), dataplane.KindIPTables, ""},
		{"none", ok, dataplane.KindNone, "--dataplane"},
		{"no node name", with(func(f *agentFlags) { f.nodeName = "" }), dataplane.KindIPTables, "--node-name"},
		{"unknown services", with(func(f *agentFlags) { f.services = "cilium" }), dataplane.KindIPTables, `--services must be rampart or kube-proxy, not "cilium"`},
		{"ebpf beside kube-proxy", with(func(f *agentFlags) { f.services = "kube-proxy" }), dataplane.KindEBPF, "--services=kube-proxy needs --dataplane=iptables"},
		{"iptables with cgroup", with(func(f *agentFlags) { f.cgroup = "/x" }), dataplane.KindIPTables, "--cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.check(tc.kind)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("check: %v, want ok", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("check: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestDaemonSetArgs: the DaemonSet's container arguments are flags of the agent's command (its
// entrypoint is rampart-agent), which check accepts: a renamed or removed flag, or a leftover
// subcommand word, fails here rather than in a crash-looping pod.
func TestDaemonSetArgs(t *testing.T) {
	b, err := deploy.Files.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatal(err)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	cmd := New("rampart-agent")
	if err := cmd.ParseFlags(c.Args); err != nil {
		t.Fatalf("DaemonSet args %q: %v", c.Args, err)
	}
	if rest := cmd.Flags().Args(); len(rest) > 0 {
		t.Fatalf("DaemonSet args leave %q, which the agent takes no arguments for", rest)
	}
	if dp, _ := cmd.Flags().GetString("dataplane"); dp != "auto" {
		t.Errorf("--dataplane=%s, want auto (scripts/cluster.sh replaces that first argument)", dp)
	}
	// Go's soft memory limit must sit under the container's hard one.
	limit := c.Resources.Limits.Memory()
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		soft, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
		if err != nil || limit.IsZero() || soft.Cmp(*limit) >= 0 {
			t.Errorf("GOMEMLIMIT=%s, container memory limit %s: want a soft limit under the hard one (%v)", e.Value, limit, err)
		}
	}
	if c.Args[0] != "--dataplane=auto" {
		t.Errorf("first argument %q, want --dataplane=auto (scripts/cluster.sh patches it by position)", c.Args[0])
	}
}
