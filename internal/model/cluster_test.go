package model

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestHas(t *testing.T) {
	c := NewCluster()
	c.Pods["shop/web"] = &Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	for _, tc := range []struct {
		kind, ref string
		want      bool
	}{
		{"Pod", "shop/web", true},
		{"pods", "shop/web", true},
		{"po", "shop/db", false},
		{"Service", "shop/web", false},
		{"nonsense", "shop/web", false},
	} {
		if got := c.Has(tc.kind, tc.ref); got != tc.want {
			t.Errorf("Has(%s, %s) = %v, want %v", tc.kind, tc.ref, got, tc.want)
		}
	}
	if err := c.Delete("pod", "shop/web"); err != nil || c.Has("Pod", "shop/web") {
		t.Fatalf("after Delete: %v, Has %v", err, c.Has("Pod", "shop/web"))
	}
}
