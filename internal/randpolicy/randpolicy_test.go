package randpolicy

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/model"
)

// Every generated document must pass validation: generators that produce invalid input would
// make the differential tests test the validator instead of the dataplanes.
func TestGeneratedPoliciesAreValid(t *testing.T) {
	if _, err := model.Decode(strings.NewReader(Cluster()), "cluster", model.DecodeOptions{}); err != nil {
		t.Fatal(err)
	}
	for seed := int64(0); seed < 300; seed++ {
		y := Generate(rand.New(rand.NewSource(seed)), Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3})
		if _, err := model.Decode(strings.NewReader(y), "gen", model.DecodeOptions{}); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, y)
		}
	}
}
