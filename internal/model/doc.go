// Package model decodes Kubernetes objects (Namespaces, Nodes, Pods, Services, EndpointSlices,
// NetworkPolicies, AdminNetworkPolicies and BaselineAdminNetworkPolicies) from YAML or JSON into
// the real API types, applies the API server's defaulting and validation, and keeps them in a
// Cluster that the IR compiler reads. It has no kernel or network dependencies.
package model
