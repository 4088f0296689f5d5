// Package cnpconformance runs the upstream ClusterNetworkPolicy conformance suite
// (network-policy-api's conformance/, as gen prepares it for a kernel without SCTP sockets)
// against the cluster $KUBECONFIG names: `make cnp-conformance` on the real cluster of
// `make cluster`.
package cnpconformance_test

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	api "sigs.k8s.io/network-policy-api/apis/v1beta1"
	"sigs.k8s.io/network-policy-api/conformance/utils/flags"
	"sigs.k8s.io/network-policy-api/conformance/utils/suite"

	"github.com/rampart-sec/rampart/test/cnpconformance/upstream"
	"github.com/rampart-sec/rampart/test/cnpconformance/upstream/tests"
)

// sctpOnly are the tests that probe nothing but SCTP: skipped by name, so the report lists them.
var sctpOnly = []string{"CNPAdminTierIngressSCTP", "CNPAdminTierEgressSCTP", "CNPBaselineTierIngressSCTP", "CNPBaselineTierEgressSCTP"}

// TestConformance is upstream's, with the prepared manifests and the SCTP-only tests skipped.
func TestConformance(t *testing.T) {
	cfg, err := config.GetConfig()
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Install(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	s := suite.New(suite.Options{
		Client:                     c,
		ClientSet:                  cs,
		KubeConfig:                 *cfg,
		Debug:                      *flags.ShowDebug,
		CleanupBaseResources:       *flags.CleanupBaseResources,
		SupportedFeatures:          suite.ParseSupportedFeatures(*flags.SupportedFeatures),
		ExemptFeatures:             suite.ParseSupportedFeatures(*flags.ExemptFeatures),
		EnableAllSupportedFeatures: *flags.EnableAllSupportedFeatures,
		SkipTests:                  sctpOnly,
		FS:                         &upstream.Manifests,
	})
	setup(t, s)
	s.Run(t, tests.ConformanceTests)
}

// setup is upstream's Setup (the same host-network ports, base manifests and cleanup), except
// that the pods are ready when each StatefulSet has the replicas it asks for: upstream checks
// for two everywhere, and on one node the host-network set runs one (see gen).
func setup(t *testing.T, s *suite.ConformanceTestSuite) {
	const firstHostPort, hostPorts = 34345, 8 // upstream's defaults
	s.HostNetworkPorts = nil
	for p := firstHostPort; p < firstHostPort+hostPorts; p++ {
		s.HostNetworkPorts = append(s.HostNetworkPorts, p)
	}
	s.HostNetworkPortRangeStart, s.HostNetworkPortRangeEnd = firstHostPort, firstHostPort+hostPorts-1
	s.Applier.FS, s.Applier.HostNetworkPorts = s.FS, s.HostNetworkPorts
	t.Logf("Test Setup: Applying base manifests")
	s.Applier.MustApplyWithCleanup(t, s.Client, s.TimeoutConfig, s.BaseManifests, s.Cleanup)
	t.Logf("Test Setup: Ensuring the base manifests' pods are ready")
	sets := map[string]string{
		"network-policy-conformance-gryffindor": "harry-potter", "network-policy-conformance-slytherin": "draco-malfoy",
		"network-policy-conformance-hufflepuff": "cedric-diggory", "network-policy-conformance-ravenclaw": "luna-lovegood",
		"network-policy-conformance-forbidden-forrest": "centaur",
	}
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, s.TimeoutConfig.NamespacesMustBeReady, true, func(ctx context.Context) (bool, error) {
		for ns, name := range sets {
			var ss appsv1.StatefulSet
			if err := s.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &ss); err != nil {
				t.Logf("StatefulSet %s/%s: %v", ns, name, err)
				return false, nil
			}
			if ss.Spec.Replicas == nil || ss.Status.ReadyReplicas != *ss.Spec.Replicas {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the base manifests' pods are not ready: %v", err)
	}
}
