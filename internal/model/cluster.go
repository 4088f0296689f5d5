package model

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
)

// Cluster is a consistent set of objects: what the API server (or a YAML directory) says the
// cluster holds. Keys are "namespace/name" for namespaced kinds and "name" otherwise.
type Cluster struct {
	Namespaces      map[string]*corev1.Namespace
	Nodes           map[string]*corev1.Node
	Pods            map[string]*corev1.Pod
	Services        map[string]*corev1.Service
	EndpointSlices  map[string]*discoveryv1.EndpointSlice
	NetworkPolicies map[string]*networkingv1.NetworkPolicy
	ANPs            map[string]*anpv1alpha1.AdminNetworkPolicy
	BANPs           map[string]*anpv1alpha1.BaselineAdminNetworkPolicy
}

// NewCluster returns an empty cluster.
func NewCluster() *Cluster {
	return &Cluster{
		Namespaces:      map[string]*corev1.Namespace{},
		Nodes:           map[string]*corev1.Node{},
		Pods:            map[string]*corev1.Pod{},
		Services:        map[string]*corev1.Service{},
		EndpointSlices:  map[string]*discoveryv1.EndpointSlice{},
		NetworkPolicies: map[string]*networkingv1.NetworkPolicy{},
		ANPs:            map[string]*anpv1alpha1.AdminNetworkPolicy{},
		BANPs:           map[string]*anpv1alpha1.BaselineAdminNetworkPolicy{},
	}
}

// FromObjects builds a cluster holding objs.
func FromObjects(objs []Object) *Cluster {
	c := NewCluster()
	for _, o := range objs {
		c.Apply(o)
	}
	return c
}

// Apply creates or replaces one object.
func (c *Cluster) Apply(o Object) {
	ref := o.Ref()
	switch obj := o.Obj.(type) {
	case *corev1.Namespace:
		c.Namespaces[ref] = obj
	case *corev1.Node:
		c.Nodes[ref] = obj
	case *corev1.Pod:
		c.Pods[ref] = obj
	case *corev1.Service:
		c.Services[ref] = obj
	case *discoveryv1.EndpointSlice:
		c.EndpointSlices[ref] = obj
	case *networkingv1.NetworkPolicy:
		c.NetworkPolicies[ref] = obj
	case *anpv1alpha1.AdminNetworkPolicy:
		c.ANPs[ref] = obj
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		c.BANPs[ref] = obj
	default:
		panic(fmt.Sprintf("model: Apply of unsupported %T", o.Obj))
	}
}

// ErrNotFound is returned by Delete for an object the cluster does not hold.
var ErrNotFound = fmt.Errorf("not found")

// Delete removes the object of kind (any spelling IsKind accepts) at ref.
func (c *Cluster) Delete(kind, ref string) error {
	k, ok := IsKind(kind)
	if !ok {
		return fmt.Errorf("unsupported kind %q", kind)
	}
	var found bool
	switch k {
	case KindNamespace:
		found = del(c.Namespaces, ref)
		if found { // as the API server does, deleting a namespace deletes what lives in it
			delIn(c.Pods, ref)
			delIn(c.Services, ref)
			delIn(c.EndpointSlices, ref)
			delIn(c.NetworkPolicies, ref)
		}
	case KindNode:
		found = del(c.Nodes, ref)
	case KindPod:
		found = del(c.Pods, ref)
	case KindService:
		found = del(c.Services, ref)
	case KindEndpointSlice:
		found = del(c.EndpointSlices, ref)
	case KindNetworkPolicy:
		found = del(c.NetworkPolicies, ref)
	case KindANP:
		found = del(c.ANPs, ref)
	case KindBANP:
		found = del(c.BANPs, ref)
	}
	if !found {
		return fmt.Errorf("%s %s: %w", k, ref, ErrNotFound)
	}
	return nil
}

// Has reports whether the cluster holds the object of kind (any spelling IsKind accepts) at ref.
func (c *Cluster) Has(kind, ref string) bool {
	k, _ := IsKind(kind)
	switch k {
	case KindNamespace:
		return has(c.Namespaces, ref)
	case KindNode:
		return has(c.Nodes, ref)
	case KindPod:
		return has(c.Pods, ref)
	case KindService:
		return has(c.Services, ref)
	case KindEndpointSlice:
		return has(c.EndpointSlices, ref)
	case KindNetworkPolicy:
		return has(c.NetworkPolicies, ref)
	case KindANP:
		return has(c.ANPs, ref)
	case KindBANP:
		return has(c.BANPs, ref)
	}
	return false
}

func has[T any](m map[string]T, k string) bool {
	_, ok := m[k]
	return ok
}

func del[T any](m map[string]T, k string) bool {
	_, ok := m[k]
	delete(m, k)
	return ok
}

// delIn deletes every entry of namespace ns from a map keyed "ns/name".
func delIn[T any](m map[string]T, ns string) {
	for k := range m {
		if strings.HasPrefix(k, ns+"/") {
			delete(m, k)
		}
	}
}

// Clone returns a deep copy, so a change can be prepared and checked before it replaces the
// running state.
func (c *Cluster) Clone() *Cluster {
	return &Cluster{
		Namespaces:      cloneMap(c.Namespaces),
		Nodes:           cloneMap(c.Nodes),
		Pods:            cloneMap(c.Pods),
		Services:        cloneMap(c.Services),
		EndpointSlices:  cloneMap(c.EndpointSlices),
		NetworkPolicies: cloneMap(c.NetworkPolicies),
		ANPs:            cloneMap(c.ANPs),
		BANPs:           cloneMap(c.BANPs),
	}
}

func cloneMap[T interface{ DeepCopy() T }](m map[string]T) map[string]T {
	out := make(map[string]T, len(m))
	for k, v := range m {
		out[k] = v.DeepCopy()
	}
	return out
}

// SortedKeys returns a map's keys in order, for deterministic iteration.
func SortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
