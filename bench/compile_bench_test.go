package bench

import (
	"testing"

	"github.com/rampart-sec/rampart/internal/ir/compile"
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
