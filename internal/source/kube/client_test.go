package kube

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

// TestDiscoverAllLegacy: a server without aggregated discovery answers /api and /apis with
// the plain lists, and each group version is asked on its own; one that fails is skipped.
// (Aggregated discovery is covered against a real API server.)
func TestDiscoverAllLegacy(t *testing.T) {
	answers := map[string]any{
		"/api":    metav1.APIVersions{Versions: []string{"v1"}},
		"/apis":   metav1.APIGroupList{Groups: []metav1.APIGroup{{Name: "cilium.io", Versions: []metav1.GroupVersionForDiscovery{{GroupVersion: "cilium.io/v2"}, {GroupVersion: "cilium.io/v1"}}}}},
		"/api/v1": metav1.APIResourceList{GroupVersion: "v1", APIResources: []metav1.APIResource{{Name: "pods", Kind: "Pod", Namespaced: true}}},
		"/apis/cilium.io/v2": metav1.APIResourceList{GroupVersion: "cilium.io/v2",
			APIResources: []metav1.APIResource{{Name: "ciliumnetworkpolicies", Kind: "CiliumNetworkPolicy", Namespaced: true}}},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			http.Error(w, "not found", http.StatusNotFound) // cilium.io/v1: an aggregated server that is down
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	}))
	defer srv.Close()
	a, err := restAPI(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	lists, err := a.allResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]metav1.APIResource{}
	for _, l := range lists {
		got[l.GroupVersion] = l.APIResources
	}
	if len(got) != 2 || len(got["v1"]) != 1 || got["v1"][0].Kind != "Pod" ||
		len(got["cilium.io/v2"]) != 1 || got["cilium.io/v2"][0].Kind != "CiliumNetworkPolicy" || !got["cilium.io/v2"][0].Namespaced {
		t.Fatalf("discovered %+v", got)
	}
	if rl, err := a.resources(context.Background(), schema.GroupVersion{Group: "cilium.io", Version: "v2"}); err != nil || len(rl.APIResources) != 1 {
		t.Fatalf("resources of cilium.io/v2: %+v, %v", rl, err)
	}
	if _, err := a.resources(context.Background(), schema.GroupVersion{Group: "cilium.io", Version: "v1"}); err == nil {
		t.Fatal("a group version that is not served gave no error")
	}
}
