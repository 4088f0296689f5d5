package randpolicy

import (
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

// TestShrink: for random policy sets that deny some flow, Shrink returns a set that still
// denies it, from which no document, rule, peer or port can be dropped without the flow being
// allowed again (1-minimal).
func TestShrink(t *testing.T) {
	base, err := model.Decode(strings.NewReader(Cluster()), "cluster", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	flow := policy.Flow{Src: netip.MustParseAddr(PodIP("x", "a")), Dst: netip.MustParseAddr(PodIP("y", "b")), Protocol: ir.TCP, Port: 80}
	denies := func(y string) bool {
		objs, err := model.Decode(strings.NewReader(y), "gen", model.DecodeOptions{})
		if err != nil {
			return false // a broken candidate is not the failure being shrunk
		}
		rs, err := compile.Compile(model.FromObjects(append(append([]model.Object{}, base...), objs...)))
		if err != nil {
			return false
		}
		return !policy.New(rs).Verdict(flow).Allowed
	}
	shrunk := 0
	for seed := int64(0); seed < 40 && shrunk < 5; seed++ {
		y := Generate(rand.New(rand.NewSource(seed)), Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true})
		if !denies(y) {
			continue
		}
		shrunk++
		m := Shrink(y, denies)
		if !denies(m) {
			t.Fatalf("seed %d: the shrunk set no longer fails:\n%s", seed, m)
		}
		docs := splitDocs(m)
		if len(docs) > len(splitDocs(y)) {
			t.Fatalf("seed %d: shrinking added documents", seed)
		}
		for i := range docs {
			rest := append(append([]string{}, docs[:i]...), docs[i+1:]...)
			if denies(strings.Join(rest, "---\n")) {
				t.Errorf("seed %d: document %d could still go:\n%s", seed, i, m)
			}
		}
		if again := Shrink(m, denies); again != m {
			t.Errorf("seed %d: shrinking the result shrank it further:\n%s\n->\n%s", seed, m, again)
		}
	}
	if shrunk == 0 {
		t.Fatal("no generated set denied the flow: the test checked nothing")
	}
}
