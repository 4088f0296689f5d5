// Package deploy holds the manifests that install rampart in a cluster (kubectl apply -k
// deploy/) and embeds them, so the lab's API server and the tests install the same CRDs and
// check the same objects users apply.
package deploy

import "embed"

// Files holds the kustomization, the agent's objects and the network-policy-api CRDs.
//
//go:embed kustomization.yaml namespace.yaml rbac.yaml daemonset.yaml crds/*.yaml
var Files embed.FS

// CRDs are the CustomResourceDefinitions, in the order to create them.
var CRDs = []string{
	"crds/policy.networking.k8s.io_adminnetworkpolicies.yaml",
	"crds/policy.networking.k8s.io_baselineadminnetworkpolicies.yaml",
	"crds/policy.networking.k8s.io_clusternetworkpolicies.yaml",
}

// Resources are the agent's own objects, in the order to create them.
var Resources = []string{"namespace.yaml", "rbac.yaml", "daemonset.yaml"}
