package exposure

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

// TestSourceClassesMatchEveryPod: grouping source pods into classes (one verdict per class)
// gives, for random policy sets, exactly what a verdict for every single pod gives.
func TestSourceClassesMatchEveryPod(t *testing.T) {
	for seed := int64(1); seed <= 60; seed++ {
		y := randpolicy.Cluster() + "---\n" + randpolicy.Generate(rand.New(rand.NewSource(seed)), randpolicy.Options{NetworkPolicies: 5, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3})
		objs, err := model.Decode(strings.NewReader(y), "random", model.DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs, err := compile.Compile(model.FromObjects(objs))
		if err != nil {
			t.Fatal(err)
		}
		ev := policy.New(rs)
		a := New(ev)
		for i := range rs.Pods {
			dst := &rs.Pods[i]
			e, _ := a.Of(dst.Key())
			for j, pp := range policy.DeclaredPorts(dst) {
				allowed, total := 0, 0
				for k := range rs.Pods {
					src := &rs.Pods[k]
					if k == i || len(src.IPs) == 0 || src.HostNetwork {
						continue
					}
					total++
					if ev.Verdict(policy.Flow{Src: src.IP(), Dst: dst.IP(), Protocol: pp.Protocol, Port: pp.Port}).Allowed {
						allowed++
					}
				}
				got := e.Ports[j]
				if got.PodsAllowed != allowed || got.PodsTotal != total {
					t.Fatalf("seed %d: %s %d/%s: classes say %d of %d pods, every pod says %d of %d\n%s",
						seed, dst.Key(), pp.Port, pp.Protocol, got.PodsAllowed, got.PodsTotal, allowed, total, y)
				}
			}
		}
	}
}
