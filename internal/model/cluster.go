package model

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// Cluster is a consistent set of objects: what the API server (or a YAML directory) says the
// cluster holds. Keys are "namespace/name" for namespaced kinds and "name" otherwise.
type Cluster struct {
	Namespaces      map[string]*corev1.Namespace
	Nodes           map[string]*corev1.Node
	Pods            map[string]*Pod
	Services        map[string]*corev1.Service
	EndpointSlices  map[string]*discoveryv1.EndpointSlice
	NetworkPolicies map[string]*networkingv1.NetworkPolicy
	ANPs            map[string]*anpv1alpha1.AdminNetworkPolicy
	BANPs           map[string]*anpv1alpha1.BaselineAdminNetworkPolicy
	// CNPs are ClusterNetworkPolicies, of either served version (v1alpha2 and v1beta1 share
	// one schema).
	CNPs map[string]*cnpv1alpha2.ClusterNetworkPolicy
	// ThreatDefense is the threat-defense configuration in force (nil: none); there is one, and
	// applying another replaces it.
	ThreatDefense *ThreatDefense
}

// NewCluster returns an empty cluster.
func NewCluster() *Cluster {
	return &Cluster{
		Namespaces:      map[string]*corev1.Namespace{},
		Nodes:           map[string]*corev1.Node{},
		Pods:            map[string]*Pod{},
		Services:        map[string]*corev1.Service{},
		EndpointSlices:  map[string]*discoveryv1.EndpointSlice{},
		NetworkPolicies: map[string]*networkingv1.NetworkPolicy{},
		ANPs:            map[string]*anpv1alpha1.AdminNetworkPolicy{},
		BANPs:           map[string]*anpv1alpha1.BaselineAdminNetworkPolicy{},
		CNPs:            map[string]*cnpv1alpha2.ClusterNetworkPolicy{},
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
		c.Pods[ref] = PodFrom(obj)
	case *Pod:
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
	case *cnpv1alpha2.ClusterNetworkPolicy:
		c.CNPs[ref] = obj
	case *ThreatDefense:
		c.ThreatDefense = obj
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
	if k == KindThreatDefense {
		if c.ThreatDefense == nil || c.ThreatDefense.Name != ref {
			return fmt.Errorf("%s %s: %w", k, ref, ErrNotFound)
		}
		c.ThreatDefense = nil
		return nil
	}
	objs := c.objectsOf(k)
	if objs == nil || !objs.del(ref) {
		return fmt.Errorf("%s %s: %w", k, ref, ErrNotFound)
	}
	if k == KindNamespace { // as the API server does, deleting a namespace deletes what lives in it
		delIn(c.Pods, ref)
		delIn(c.Services, ref)
		delIn(c.EndpointSlices, ref)
		delIn(c.NetworkPolicies, ref)
	}
	return nil
}

// Has reports whether the cluster holds the object of kind (any spelling IsKind accepts) at ref.
func (c *Cluster) Has(kind, ref string) bool {
	k, _ := IsKind(kind)
	if k == KindThreatDefense {
		return c.ThreatDefense != nil && c.ThreatDefense.Name == ref
	}
	objs := c.objectsOf(k)
	return objs != nil && objs.has(ref)
}

// refs is one kind's objects by reference, whatever their Go type.
type refs interface {
	has(ref string) bool
	del(ref string) bool // reports whether ref was there
}

type objects[T any] map[string]T

func (m objects[T]) has(ref string) bool {
	_, ok := m[ref]
	return ok
}

func (m objects[T]) del(ref string) bool {
	_, ok := m[ref]
	delete(m, ref)
	return ok
}

// objectsOf returns the objects of kind (as IsKind names it), nil for other kinds.
func (c *Cluster) objectsOf(kind string) refs {
	switch kind {
	case KindNamespace:
		return objects[*corev1.Namespace](c.Namespaces)
	case KindNode:
		return objects[*corev1.Node](c.Nodes)
	case KindPod:
		return objects[*Pod](c.Pods)
	case KindService:
		return objects[*corev1.Service](c.Services)
	case KindEndpointSlice:
		return objects[*discoveryv1.EndpointSlice](c.EndpointSlices)
	case KindNetworkPolicy:
		return objects[*networkingv1.NetworkPolicy](c.NetworkPolicies)
	case KindANP:
		return objects[*anpv1alpha1.AdminNetworkPolicy](c.ANPs)
	case KindBANP:
		return objects[*anpv1alpha1.BaselineAdminNetworkPolicy](c.BANPs)
	case KindCNP:
		return objects[*cnpv1alpha2.ClusterNetworkPolicy](c.CNPs)
	}
	return nil
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
		CNPs:            cloneMap(c.CNPs),
		ThreatDefense:   c.ThreatDefense.DeepCopy(),
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
