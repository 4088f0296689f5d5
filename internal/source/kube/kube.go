// Package kube reads a cluster's objects from its API server (client-go), as the model holds
// them: Namespaces, Nodes, Pods, Services, EndpointSlices, NetworkPolicies, and the
// AdminNetworkPolicies and BaselineAdminNetworkPolicies where their CRDs are installed.
package kube

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"

	"github.com/rampart-sec/rampart/internal/model"
)

// The network-policy-api resources, read through the dynamic client so that a cluster without
// the CRDs is simply a cluster without admin policies.
var (
	anpGVR  = schema.GroupVersionResource{Group: "policy.networking.k8s.io", Version: "v1alpha1", Resource: "adminnetworkpolicies"}
	banpGVR = schema.GroupVersionResource{Group: "policy.networking.k8s.io", Version: "v1alpha1", Resource: "baselineadminnetworkpolicies"}
)

// Load lists the cluster's objects through the kubeconfig at path ("" for the default rules:
// $KUBECONFIG, ~/.kube/config, in-cluster).
func Load(ctx context.Context, kubeconfig string) ([]model.Object, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return List(ctx, cs, dyn)
}

// List reads every object the model uses.
func List(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) ([]model.Object, error) {
	var out []model.Object
	add := func(kind string, items any) error {
		objs, err := meta.ExtractList(items.(runtime.Object))
		if err != nil {
			return err
		}
		for _, o := range objs {
			out = append(out, apiObject(kind, o))
		}
		return nil
	}
	all := metav1.ListOptions{}
	steps := []struct {
		kind string
		list func() (runtime.Object, error)
	}{
		{model.KindNamespace, func() (runtime.Object, error) { return cs.CoreV1().Namespaces().List(ctx, all) }},
		{model.KindNode, func() (runtime.Object, error) { return cs.CoreV1().Nodes().List(ctx, all) }},
		{model.KindPod, func() (runtime.Object, error) { return cs.CoreV1().Pods("").List(ctx, all) }},
		{model.KindService, func() (runtime.Object, error) { return cs.CoreV1().Services("").List(ctx, all) }},
		{model.KindEndpointSlice, func() (runtime.Object, error) { return cs.DiscoveryV1().EndpointSlices("").List(ctx, all) }},
		{model.KindNetworkPolicy, func() (runtime.Object, error) { return cs.NetworkingV1().NetworkPolicies("").List(ctx, all) }},
	}
	for _, s := range steps {
		l, err := s.list()
		if err != nil {
			return nil, fmt.Errorf("list %ss: %w", s.kind, err)
		}
		if err := add(s.kind, l); err != nil {
			return nil, err
		}
	}
	anps, err := listDynamic[anpv1alpha1.AdminNetworkPolicy](ctx, dyn, anpGVR, model.KindANP)
	if err != nil {
		return nil, err
	}
	banps, err := listDynamic[anpv1alpha1.BaselineAdminNetworkPolicy](ctx, dyn, banpGVR, model.KindBANP)
	if err != nil {
		return nil, err
	}
	return append(append(out, anps...), banps...), nil
}

// apiObject is an object as read from the API server.
func apiObject(kind string, o any) model.Object {
	return model.Object{File: "api-server", Kind: kind, Obj: o}
}

// listDynamic lists a custom resource as its Go type; a resource the server does not serve
// yields nothing.
func listDynamic[T any](ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, kind string) ([]model.Object, error) {
	l, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", gvr.Resource, err)
	}
	var out []model.Object
	for _, u := range l.Items {
		var t T
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &t); err != nil {
			return nil, fmt.Errorf("%s %s: %w", gvr.Resource, u.GetName(), err)
		}
		out = append(out, apiObject(kind, &t))
	}
	return out, nil
}
