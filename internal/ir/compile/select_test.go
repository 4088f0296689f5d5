package compile

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// TestSelectionMatchesBruteForce: selecting pods through the label index gives exactly the pods
// a scan of every pod with the selector gives, for random labels and random selectors (equality,
// set-based and existence requirements, alone and combined).
func TestSelectionMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	keys, values := []string{"app", "tier", "team"}, []string{"a", "b", "c", "d"}
	c := model.NewCluster()
	for _, ns := range []string{"big", "small"} {
		n := 80
		if ns == "small" {
			n = 5 // below the index threshold: scanned
		}
		for i := 0; i < n; i++ {
			lbl := map[string]string{}
			for _, k := range keys {
				if r.Intn(4) > 0 {
					lbl[k] = values[r.Intn(len(values))]
				}
			}
			c.Pods[ns+"/p"+fmt.Sprint(i)] = model.PodFrom(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", i), Labels: lbl}})
		}
	}
	k := &compiler{c: c, rs: &ir.Ruleset{}, nsLabel: map[string]labels.Set{}, nodeLbl: map[string]labels.Set{}, sels: map[*metav1.LabelSelector]selEntry{}}
	k.pods()
	k.indexPods()
	ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}
	for i := 0; i < 2000; i++ {
		s := &metav1.LabelSelector{}
		if r.Intn(2) == 0 {
			s.MatchLabels = map[string]string{keys[r.Intn(len(keys))]: values[r.Intn(len(values))]}
		}
		for j := r.Intn(3); j > 0; j-- {
			req := metav1.LabelSelectorRequirement{Key: keys[r.Intn(len(keys))], Operator: ops[r.Intn(len(ops))]}
			if req.Operator == metav1.LabelSelectorOpIn || req.Operator == metav1.LabelSelectorOpNotIn {
				for v := r.Intn(3) + 1; v > 0; v-- {
					req.Values = append(req.Values, values[r.Intn(len(values))])
				}
			}
			s.MatchExpressions = append(s.MatchExpressions, req)
		}
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{"big", "small"} {
			got := k.podsIn(ns, sel)
			var want []ir.PodID
			for _, p := range k.rs.Pods {
				if p.Namespace == ns && sel.Matches(k.podLbl[p.ID]) {
					want = append(want, p.ID)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s in %s: index gives %v, a scan %v", sel, ns, got, want)
			}
		}
	}
}
