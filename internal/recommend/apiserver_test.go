package recommend_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/lab/apiserver"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/recommend"
)

// Recommendations are valid for a real API server, not only for rampart's validation: the
// example application's and those of random clusters (unlabelled pods' DoesNotExist
// selectors, named ports, ipBlocks) pass a server-side dry run.
func TestRecommendationAcceptedByAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, err := apiserver.Start(ctx, t.TempDir(), apiserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cfg, err := clientcmd.BuildConfigFromFlags("", srv.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	type input struct {
		c       *model.Cluster
		records []flow.Record
	}
	now := time.Now()
	inputs := []input{{examples(t), []flow.Record{
		rec("10.244.1.10", "10.244.1.20", 8080, "TCP", flow.Allowed, now),
		rec("10.244.2.40", "10.244.1.20", 9999, "TCP", flow.Allowed, now),
		rec("203.0.113.9", "10.244.1.10", 8080, "TCP", flow.Allowed, now),
		rec("10.244.1.10", "10.244.1.2", 53, "UDP", flow.Allowed, now),
	}}}
	for seed := int64(0); seed < 10; seed++ {
		r := rand.New(rand.NewSource(seed))
		c, pods := genCluster(r)
		var records []flow.Record
		for i := 0; i < 2*len(pods); i++ {
			src, dst := pods[r.Intn(len(pods))], pods[r.Intn(len(pods))]
			records = append(records, record(src.ip, dst.ip, dst.ports[0], flow.Allowed))
		}
		records = append(records, record(netip.MustParseAddr("198.51.100.7"), pods[0].ip, pods[0].ports[0], flow.Allowed))
		inputs = append(inputs, input{c, records})
	}
	for i, in := range inputs {
		// The namespaces are created (a dry-run namespace holds nothing), then the policies
		// pass a server-side dry run.
		var nss bytes.Buffer
		for _, ns := range in.c.Namespaces {
			b, _ := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns.Name}})
			fmt.Fprintf(&nss, "---\n%s", b)
		}
		if err := apiserver.Create(ctx, cfg, nss.Bytes(), false); err != nil {
			t.Fatal(err)
		}
		for _, enforce := range []bool{false, true} {
			res, err := recommend.Recommend(in.c, in.records, recommend.Options{Enforce: enforce})
			if err != nil {
				t.Fatal(err)
			}
			var docs bytes.Buffer
			for _, p := range res.Policies {
				b, err := yaml.Marshal(p)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&docs, "---\n%s", b)
			}
			if err := apiserver.Create(ctx, cfg, docs.Bytes(), true); err != nil {
				t.Errorf("input %d: the API server refuses the recommendation: %v\n%s", i, err, docs.String())
			}
		}
	}
}
