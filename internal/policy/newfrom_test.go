package policy

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
)

// TestNewFromShares: with the same pods and nodes the address index is shared, not rebuilt
// (what saves the agent indexing every pod per policy change); with other pods it is rebuilt.
func TestNewFromShares(t *testing.T) {
	pods := []ir.Pod{{Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}
	a := New(&ir.Ruleset{Pods: pods})
	b := NewFrom(a, &ir.Ruleset{Pods: pods})
	if reflect.ValueOf(a.pods).Pointer() != reflect.ValueOf(b.pods).Pointer() {
		t.Error("same pods: the index was rebuilt")
	}
	c := NewFrom(b, &ir.Ruleset{Pods: append([]ir.Pod(nil), pods...)})
	if reflect.ValueOf(b.pods).Pointer() == reflect.ValueOf(c.pods).Pointer() {
		t.Error("other pods: the index was shared")
	}
	if c.Endpoint(netip.MustParseAddr("10.0.0.1")).Pod != &c.rs.Pods[0] {
		t.Error("the rebuilt index does not point into its own pods")
	}
}
