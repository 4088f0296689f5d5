package ir

import "testing"

func TestPodByKey(t *testing.T) {
	sorted := &Ruleset{Pods: []Pod{{Namespace: "a", Name: "x"}, {Namespace: "a", Name: "y"}, {Namespace: "b", Name: "x"}}}
	unsorted := &Ruleset{Pods: []Pod{{Namespace: "b", Name: "x"}, {Namespace: "a", Name: "y"}, {Namespace: "a", Name: "x"}}}
	for _, tc := range []struct {
		rs   *Ruleset
		key  string
		want bool
	}{
		{sorted, "a/y", true}, {sorted, "b/x", true}, {sorted, "a/z", false},
		{unsorted, "a/x", true}, {unsorted, "b/x", true}, {unsorted, "c/x", false},
	} {
		p := tc.rs.PodByKey(tc.key)
		if (p != nil) != tc.want || (p != nil && p.Key() != tc.key) {
			t.Errorf("PodByKey(%q) = %+v, want found=%v", tc.key, p, tc.want)
		}
	}
}
