package bench

import (
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/vuln/exposure"
)

// BenchmarkCompileScale compiles the 10,000-pod, 1,000-policy cluster.
func BenchmarkCompileScale(b *testing.B) {
	c := scaleCluster()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := compile.Compile(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEBPFTables10kRules builds the eBPF dataplane's identity and verdict tables for the
// dataplane benchmark's 10,000 rules (10,000 distinct /32 peers).
func BenchmarkEBPFTables10kRules(b *testing.B) {
	objs, err := model.Decode(strings.NewReader(benchCluster+tenThousandRules()), "bench", model.DecodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ebpf.Build(rs, func(*ir.Pod) bool { return true }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExposure100Pods computes the exposure of 100 pods of the 10,000-pod, 1,000-policy
// cluster (what `rampart scan cluster` does for each pod running a vulnerable image).
func BenchmarkExposure100Pods(b *testing.B) {
	rs, err := compile.Compile(scaleCluster())
	if err != nil {
		b.Fatal(err)
	}
	ev := policy.New(rs)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := exposure.New(ev)
		for j := 0; j < 100; j++ {
			a.Of(rs.Pods[j*len(rs.Pods)/100].Key())
		}
	}
}
