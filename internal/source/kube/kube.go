// Package kube reads a cluster's objects from its API server (client-go) as the model holds
// them: Namespaces, Nodes, Pods, Services, EndpointSlices, NetworkPolicies, and the
// AdminNetworkPolicies, BaselineAdminNetworkPolicies and ClusterNetworkPolicies where their
// CRDs are installed. Source keeps them current with shared informers (the agent's view) and
// finds the objects of policy kinds the cluster serves that rampart does not enforce (Gaps), so
// they are reported instead of silently ignored; Load takes one snapshot through the same
// Source (the CLI's), with UnenforcedKinds.
package kube

import (
	"context"
	"fmt"
	"time"

	"github.com/rampart-sec/rampart/internal/model"
)

// Load reads the cluster once through the kubeconfig at path ("" for the default rules:
// $KUBECONFIG, ~/.kube/config, in-cluster), with the policy kinds it serves that rampart does
// not enforce (UnenforcedKinds).
func Load(ctx context.Context, kubeconfig string) (*model.Cluster, []string, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	// A CLI must not hang on an unreachable server: fail the first list instead of retrying.
	cfg.Timeout = 30 * time.Second
	s, err := NewFromConfig(cfg, Options{UnenforcedPoll: -1}) // asked once below
	if err != nil {
		return nil, nil, err
	}
	// Fail fast on a server that does not answer; informers would retry it forever.
	if _, err := s.api.get(ctx, "/version"); err != nil {
		return nil, nil, fmt.Errorf("API server %s: %w", cfg.Host, err)
	}
	c, err := Once(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	kinds, err := UnenforcedKinds(ctx, s)
	return c, kinds, err
}

// Once runs s until its first sync and returns that snapshot.
func Once(ctx context.Context, s *Source) (*model.Cluster, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Synced():
		c, _ := s.Snapshot()
		return c, nil
	case err := <-done:
		return nil, fmt.Errorf("read the cluster: %w", err)
	case <-ctx.Done():
		st := s.Status()
		if st.Err != "" {
			return nil, fmt.Errorf("read the cluster: %w (%s)", ctx.Err(), st.Err)
		}
		return nil, fmt.Errorf("read the cluster: %w", ctx.Err())
	}
}
