package compile

import (
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// Compiler compiles successive states of one cluster (an agent's), carrying over from the last
// compile what does not depend on what changed. When no pod, namespace or node changed in what
// policy reads of them (a policy change: the common case, and the one users wait for), pods are
// not converted again and every selection resolved before (policy subjects, peer sets, named
// ports) is looked up instead of evaluated; selectors are parsed once per object. A Ruleset it
// returns is the one Compile returns for the same cluster (TestCompilerMatchesCompile). Not
// safe for concurrent use.
type Compiler struct {
	opts Options
	last *podState
	// sels memoizes selector conversions by the selector's address, across compiles: an
	// unchanged object keeps its address in a source's cache. Only the entries the last
	// compile used are kept, which also holds their objects alive (no address is reused).
	sels map[*metav1.LabelSelector]selEntry
}

// NewCompiler returns a Compiler building with opts.
func NewCompiler(opts Options) *Compiler { return &Compiler{opts: opts} }

// podState is what a compile derived from the cluster's pods, namespaces and nodes, and the
// objects it derived it from.
type podState struct {
	pods       map[string]*model.Pod
	namespaces map[string]*corev1.Namespace
	nodes      map[string]*corev1.Node

	rsPods   []ir.Pod
	rsNodes  []ir.Node
	podLbl   []labels.Set
	nsLabel  map[string]labels.Set
	nodeLbl  map[string]labels.Set
	nsPods   map[string][]ir.PodID
	nsList   []string
	lblIndex map[string]map[string][]ir.PodID
	// selections are resolved policy subjects by definition, podSets the address sets of pods
	// (members and addresses) by definition, portSets resolved named ports by key.
	selections map[string][]ir.PodID
	podSets    map[string]podSet
	portSets   map[string][]ir.IPPort
	// nps are the NetworkPolicy objects of the last compile, as compiled.
	nps map[*networkingv1.NetworkPolicy]npMemo
}

type podSet struct {
	ids []ir.PodID
	ips []netip.Addr // sorted, unique
}

// Compile compiles c, reusing what the last compile derived from pods, namespaces and nodes
// when they are unchanged.
func (x *Compiler) Compile(c *model.Cluster) (*ir.Ruleset, error) {
	k := newCompiler(c, x.opts)
	if x.sels != nil {
		k.prevSels = x.sels
	}
	st := x.last
	if st != nil && st.matches(c) {
		k.rs.Pods, k.rs.Nodes, k.podLbl, k.nsLabel, k.nodeLbl = st.rsPods, st.rsNodes, st.podLbl, st.nsLabel, st.nodeLbl
		k.nsPods, k.nsList, k.lblIndex = st.nsPods, st.nsList, st.lblIndex
	} else {
		k.derivePods()
		st = &podState{pods: c.Pods, namespaces: c.Namespaces, nodes: c.Nodes,
			rsPods: k.rs.Pods, rsNodes: k.rs.Nodes, podLbl: k.podLbl, nsLabel: k.nsLabel, nodeLbl: k.nodeLbl,
			nsPods: k.nsPods, nsList: k.nsList, lblIndex: k.lblIndex,
			selections: map[string][]ir.PodID{}, podSets: map[string]podSet{}, portSets: map[string][]ir.IPPort{}}
	}
	k.cache, k.nps = st, map[*networkingv1.NetworkPolicy]npMemo{}
	rs, err := k.policiesAndServices()
	if err != nil {
		return nil, err
	}
	st.nps = k.nps // only the objects of this compile: a replaced object's entry goes
	// The objects compared next time are this cluster's (its maps are not changed after a
	// snapshot: sources publish new ones).
	st.pods, st.namespaces, st.nodes = c.Pods, c.Namespaces, c.Nodes
	x.last, x.sels = st, k.sels
	return rs, nil
}

// matches says whether c's pods, namespaces and nodes are, in everything compile reads of
// them, those the state was derived from.
func (st *podState) matches(c *model.Cluster) bool {
	return sameObjects(st.pods, c.Pods, samePod) && sameObjects(st.namespaces, c.Namespaces, func(a, b *corev1.Namespace) bool {
		return maps.Equal(a.Labels, b.Labels)
	}) && sameObjects(st.nodes, c.Nodes, sameNode)
}

func sameObjects[T comparable](a, b map[string]T, same func(T, T) bool) bool {
	if len(a) != len(b) {
		return false
	}
	for key, x := range a {
		y, ok := b[key]
		if !ok || x != y && !same(x, y) {
			return false
		}
	}
	return true
}

// samePod compares what pods() and the selections read of a pod (Services read readiness from
// the cluster itself).
func samePod(a, b *model.Pod) bool {
	if a.Namespace != b.Namespace || a.Name != b.Name || a.Spec.NodeName != b.Spec.NodeName || a.Spec.HostNetwork != b.Spec.HostNetwork ||
		!maps.Equal(a.Labels, b.Labels) || !slices.Equal(a.Status.PodIPs, b.Status.PodIPs) {
		return false
	}
	ports := func(cs []model.Container, ds []model.Container) bool {
		return slices.EqualFunc(cs, ds, func(x, y model.Container) bool {
			return slices.EqualFunc(x.Ports, y.Ports, func(p, q corev1.ContainerPort) bool {
				return p.Name == q.Name && p.ContainerPort == q.ContainerPort && p.Protocol == q.Protocol
			})
		})
	}
	return ports(a.Spec.InitContainers, b.Spec.InitContainers) && ports(a.Spec.Containers, b.Spec.Containers)
}

func sameNode(a, b *corev1.Node) bool {
	return maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Status.Addresses, b.Status.Addresses) &&
		a.Spec.PodCIDR == b.Spec.PodCIDR && slices.Equal(a.Spec.PodCIDRs, b.Spec.PodCIDRs)
}

// selection resolves the selection def with resolve, or returns what it resolved to before
// with the same pods.
func (k *compiler) selection(def string, resolve func() []ir.PodID) []ir.PodID {
	if k.cache == nil {
		return resolve()
	}
	if ids, ok := k.cache.selections[def]; ok {
		return ids
	}
	ids := resolve()
	k.cache.selections[def] = ids
	return ids
}

// namedPorts returns the resolution of a named port made with the same pods (a nil state has
// none).
func (st *podState) namedPorts(key string) ([]ir.IPPort, bool) {
	if st == nil {
		return nil, false
	}
	e, ok := st.portSets[key]
	return e, ok
}

func (st *podState) rememberPorts(key string, entries []ir.IPPort) {
	if st != nil {
		st.portSets[key] = entries
	}
}

// podSet returns the pod set def made with the same pods (a nil state has none).
func (st *podState) podSet(def string) (podSet, bool) {
	if st == nil {
		return podSet{}, false
	}
	s, ok := st.podSets[def]
	return s, ok
}

func (st *podState) rememberPodSet(def string, ids []ir.PodID, ips []netip.Addr) {
	if st != nil {
		st.podSets[def] = podSet{ids, ips}
	}
}
