package flow

import (
	"net/netip"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
)

// TestNewResolverFromTakesOnlyBuiltIndexes: a resolver starts from the evaluator of an earlier
// one only once that one has built it, and lets it go after its own is built, so resolvers
// made per sync never keep a chain of older Rulesets alive.
func TestNewResolverFromTakesOnlyBuiltIndexes(t *testing.T) {
	pods := []ir.Pod{{Name: "a", Namespace: "x", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}
	r1 := NewResolver(&ir.Ruleset{Pods: pods})
	if r2 := NewResolverFrom(r1, &ir.Ruleset{Pods: pods}); r2.base != nil {
		t.Fatal("took the base of a resolver that never built its index")
	}
	ev1 := r1.Evaluator()
	r3 := NewResolverFrom(r1, &ir.Ruleset{Pods: pods})
	if r3.base != ev1 {
		t.Fatal("did not start from the built evaluator")
	}
	if p := r3.Pod(netip.MustParseAddr("10.0.0.1")); p == nil || p.Name != "a" {
		t.Fatalf("pod of 10.0.0.1: %+v", p)
	}
	if r3.base != nil || r3.built.Load() != r3.Evaluator() {
		t.Error("kept its base after building, or did not publish its own evaluator")
	}
}
