package main

import (
	"strings"
	"testing"

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
