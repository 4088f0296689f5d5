// Package compile turns a model.Cluster into an ir.Ruleset: it resolves every label selector to
// pods, namespaces and nodes, every named port to (IP, protocol, port) tuples, every Service to
// its backends, and orders policies into tiers. It is the only place where Kubernetes semantics
// meet the IR.
package compile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// compiler holds the cluster's resolved indexes while one Ruleset is built.
type compiler struct {
	c       *model.Cluster
	opts    Options
	rs      *ir.Ruleset
	nsLabel map[string]labels.Set // namespace name -> labels (declared or implied)
	podLbl  []labels.Set          // by PodID
	nodeLbl map[string]labels.Set
	setKey  map[string]ir.SetID
	portKey map[string]ir.SetID
	tiers   [2][3]ir.Tier // per direction, indexed by TierKind
	// nsPods lists each namespace's pods that policy can select (not host-network), in ID
	// order, so selectors scan one namespace instead of the whole cluster.
	nsPods map[string][]ir.PodID
	nsList []string // namespaces with pods, sorted
	// lblIndex: per namespace, "key=value" -> its pods in ID order (built on first use).
	lblIndex map[string]map[string][]ir.PodID
	// sels memoizes selector conversions: converting and formatting a LabelSelector costs
	// more than matching it, and policies share selectors by pointer within one cluster;
	// prevSels are a Compiler's of the last compile (nil: none).
	sels, prevSels map[*metav1.LabelSelector]selEntry
	// cache, given by a Compiler, holds the selections resolved with the same pods (nil:
	// resolve everything).
	cache *podState
	// defs are the definitions of rs.Sets, by id; nps the NetworkPolicies compiled or replayed
	// (a Compiler's, kept for the next compile).
	defs []string
	nps  map[*networkingv1.NetworkPolicy]npMemo
	// slices: each Service's EndpointSlices ("namespace/name"), built by services().
	slices map[string][]*discoveryv1.EndpointSlice
}

type selEntry struct {
	sel  labels.Selector
	desc string
	err  error
}

// Options change what Compile builds.
type Options struct {
	// Staged includes the staged policies (model.IsStaged) as if they were enforced, marked
	// ir.Policy.Staged: what flow records and explain --staged compare against.
	Staged bool
}

// Compile resolves the cluster's enforced policies: staged ones are left out. The model is
// already validated, so selectors parse; an error here means an inconsistency between objects.
func Compile(c *model.Cluster) (*ir.Ruleset, error) { return CompileWith(c, Options{}) }

// CompileWith is Compile with options.
func CompileWith(c *model.Cluster, opts Options) (*ir.Ruleset, error) {
	k := newCompiler(c, opts)
	k.derivePods()
	return k.policiesAndServices()
}

func newCompiler(c *model.Cluster, opts Options) *compiler {
	return &compiler{c: c, opts: opts, rs: &ir.Ruleset{}, setKey: map[string]ir.SetID{}, portKey: map[string]ir.SetID{},
		sels: map[*metav1.LabelSelector]selEntry{}}
}

// derivePods converts namespaces, nodes and pods and indexes the pods.
func (k *compiler) derivePods() {
	k.nsLabel, k.nodeLbl = map[string]labels.Set{}, map[string]labels.Set{}
	for name, ns := range k.c.Namespaces {
		k.nsLabel[name] = labels.Set(ns.Labels)
	}
	k.nodes()
	k.pods()
	k.indexPods()
}

// policiesAndServices compiles the policies and Services over the derived pods.
func (k *compiler) policiesAndServices() (*ir.Ruleset, error) {
	if err := k.networkPolicies(); err != nil {
		return nil, err
	}
	if err := k.adminPolicies(); err != nil {
		return nil, err
	}
	k.services()
	for d := range k.tiers {
		k.rs.Tiers[d] = k.tiers[d][:]
	}
	k.rs.Index()
	return k.rs, nil
}

func (k *compiler) nodes() {
	for _, name := range model.SortedKeys(k.c.Nodes) {
		n := k.c.Nodes[name]
		node := ir.Node{Name: name, Zone: n.Labels[corev1.LabelTopologyZone]}
		for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
			for _, a := range n.Status.Addresses {
				if a.Type == t {
					if ip, err := model.ParseIP(a.Address); err == nil {
						node.IPs = append(node.IPs, ip)
					}
				}
			}
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, s := range cidrs {
			if p, err := model.ParseCIDR(s); err == nil {
				node.PodCIDRs = append(node.PodCIDRs, p)
			}
		}
		k.rs.Nodes = append(k.rs.Nodes, node)
		k.nodeLbl[name] = labels.Set(n.Labels)
	}
}

func (k *compiler) nodeIPs(name string) []netip.Addr {
	for _, n := range k.rs.Nodes {
		if n.Name == name {
			return n.IPs
		}
	}
	return nil
}

func (k *compiler) pods() {
	// Sized up front: a change recompiles every pod, so allocations here are per change.
	k.rs.Pods = make([]ir.Pod, 0, len(k.c.Pods))
	k.podLbl = make([]labels.Set, 0, len(k.c.Pods))
	for _, key := range model.SortedKeys(k.c.Pods) {
		p := k.c.Pods[key]
		pod := ir.Pod{ID: ir.PodID(len(k.rs.Pods)), Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork}
		if n := len(p.Status.PodIPs); n > 0 {
			pod.IPs = make([]netip.Addr, 0, n)
		}
		for _, pip := range p.Status.PodIPs {
			if ip, err := model.ParseIP(pip.IP); err == nil {
				pod.IPs = append(pod.IPs, ip)
			}
		}
		if pod.HostNetwork && len(pod.IPs) == 0 {
			pod.IPs = slices.Clone(k.nodeIPs(pod.Node))
		}
		n := 0
		for _, cs := range [][]model.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for _, c := range cs {
				n += len(c.Ports)
			}
		}
		if n > 0 {
			pod.Ports = make([]ir.ContainerPort, 0, n)
		}
		for _, cs := range [][]model.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for _, c := range cs {
				for _, cp := range c.Ports {
					proto, _ := ir.ParseProtocol(string(cp.Protocol))
					pod.Ports = append(pod.Ports, ir.ContainerPort{Name: cp.Name, Port: uint16(cp.ContainerPort), Protocol: proto})
				}
			}
		}
		k.rs.Pods = append(k.rs.Pods, pod)
		k.podLbl = append(k.podLbl, labels.Set(p.Labels))
		if _, ok := k.nsLabel[p.Namespace]; !ok {
			// A pod in a namespace the input does not declare: the namespace exists implicitly,
			// with the label the API server would give it.
			k.nsLabel[p.Namespace] = labels.Set{model.NamespaceNameLabel: p.Namespace}
		}
	}
}

func (k *compiler) indexPods() {
	k.nsPods = map[string][]ir.PodID{}
	k.lblIndex = map[string]map[string][]ir.PodID{}
	for _, p := range k.rs.Pods {
		if !p.HostNetwork {
			k.nsPods[p.Namespace] = append(k.nsPods[p.Namespace], p.ID)
		}
	}
	k.nsList = model.SortedKeys(k.nsPods)
}

func (k *compiler) lookup(s *metav1.LabelSelector) selEntry {
	if e, ok := k.sels[s]; ok {
		return e
	}
	if e, ok := k.prevSels[s]; ok {
		k.sels[s] = e
		return e
	}
	var e selEntry
	e.sel, e.err = metav1.LabelSelectorAsSelector(s)
	switch {
	case s == nil:
		e.desc = "<none>"
	case e.err == nil && e.sel.Empty():
		e.desc = "all"
	case e.err == nil:
		e.desc = e.sel.String()
	}
	k.sels[s] = e
	return e
}

func (k *compiler) selector(s *metav1.LabelSelector) (labels.Selector, error) {
	e := k.lookup(s)
	return e.sel, e.err
}

// describeSelector renders a selector canonically ("all" when it selects everything); it
// identifies selections (set definitions) as well as describing them.
func (k *compiler) describeSelector(s *metav1.LabelSelector) string { return k.lookup(s).desc }

// policyPods returns the pods (never host-network ones: they are not subject to, nor selected
// as, pod policy peers) accepted by nsMatch and podSel.
func (k *compiler) policyPods(nsMatch func(ns string) bool, podSel labels.Selector) []ir.PodID {
	var ids []ir.PodID
	for _, ns := range k.nsList {
		if !nsMatch(ns) {
			continue
		}
		for _, id := range k.candidates(ns, podSel) {
			if podSel == nil || podSel.Matches(k.podLbl[id]) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// candidates narrows a namespace's pods to those that can match sel: when sel requires a label
// to equal one of some values, only the pods carrying one of those label pairs (looked up in
// the namespace's label index, built on first use), in ID order. The caller still matches
// every candidate against sel.
func (k *compiler) candidates(ns string, sel labels.Selector) []ir.PodID {
	all := k.nsPods[ns]
	if sel == nil || len(all) < 16 {
		return all
	}
	reqs, ok := sel.Requirements()
	if !ok {
		return all
	}
	idx := k.lblIndex[ns]
	if idx == nil {
		idx = map[string][]ir.PodID{}
		for _, id := range all {
			for key, v := range k.podLbl[id] {
				idx[key+"="+v] = append(idx[key+"="+v], id)
			}
		}
		k.lblIndex[ns] = idx
	}
	best := all
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
		default:
			continue
		}
		vals := r.Values() // a set: "in (b, b)" looks b up once
		var ids []ir.PodID
		for v := range vals {
			ids = append(ids, idx[r.Key()+"="+v]...)
		}
		if len(ids) < len(best) {
			if vals.Len() > 1 {
				slices.Sort(ids) // a pod has one value per key: no duplicates to drop
			}
			best = ids
		}
	}
	return best
}

// podsIn returns the policy-selectable pods of one namespace matching podSel.
func (k *compiler) podsIn(ns string, podSel labels.Selector) []ir.PodID {
	return k.policyPods(func(n string) bool { return n == ns }, podSel)
}

func (k *compiler) nsSelector(s *metav1.LabelSelector) (func(string) bool, error) {
	sel, err := k.selector(s)
	if err != nil {
		return nil, err
	}
	return func(ns string) bool { return sel.Matches(k.nsLabel[ns]) }, nil
}

// podSet interns an address set of pods. def identifies the selection (not its members), so
// the set keeps its name while pods come and go: dataplanes then update members in place.
func (k *compiler) podSet(def string, resolve func() []ir.PodID, desc string) ir.SetID {
	if id, ok := k.setKey[def]; ok {
		return id // the same selection was resolved already
	}
	if s, ok := k.cache.podSet(def); ok {
		// The same members as last time, as the same slices: the dataplanes compare sets
		// with the last ones, and identical slices compare at once.
		return k.internSet(def, s.ips, s.ids, nil, desc)
	}
	ids := resolve()
	var ips []netip.Addr
	for _, id := range ids {
		ips = append(ips, k.rs.Pods[id].IPs...)
	}
	id := k.addrSet(def, ips, ids, nil, desc)
	k.cache.rememberPodSet(def, ids, k.rs.Sets[id].IPs)
	return id
}

func (k *compiler) addrSet(def string, ips []netip.Addr, pods []ir.PodID, blocks []ir.Block, desc string) ir.SetID {
	if id, ok := k.setKey[def]; ok {
		return id
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
	return k.internSet(def, slices.Compact(ips), pods, blocks, desc)
}

// internSet adds a set whose addresses are sorted and unique.
func (k *compiler) internSet(def string, ips []netip.Addr, pods []ir.PodID, blocks []ir.Block, desc string) ir.SetID {
	id := ir.SetID(len(k.rs.Sets))
	k.defs = append(k.defs, def)
	k.rs.Sets = append(k.rs.Sets, ir.AddrSet{ID: id, Name: "a" + shortHash(def), Desc: desc, IPs: ips, Pods: pods, Blocks: blocks})
	k.setKey[def] = id
	return id
}

// blockDef identifies a set of CIDR blocks.
func blockDef(blocks []ir.Block) string {
	var b strings.Builder
	b.WriteString("blocks|")
	for _, bl := range blocks {
		b.WriteString(bl.CIDR.String())
		for _, e := range bl.Except {
			b.WriteString("!" + e.String())
		}
		b.WriteString(";")
	}
	return b.String()
}

// namedPortSet interns the resolution of a port name: every non-host pod declaring name with
// protocol proto (any protocol when proto is 0).
func (k *compiler) namedPortSet(name string, proto ir.Protocol) ir.SetID {
	key := fmt.Sprintf("%s/%d", name, proto)
	if id, ok := k.portKey[key]; ok {
		return id
	}
	var entries []ir.IPPort
	if cached, ok := k.cache.namedPorts(key); ok {
		entries = cached
	} else {
		for _, p := range k.rs.Pods {
			if p.HostNetwork {
				continue
			}
			for _, cp := range p.Ports {
				if cp.Name == name && (proto == 0 || cp.Protocol == proto) {
					for _, ip := range p.IPs {
						entries = append(entries, ir.IPPort{IP: ip, Protocol: cp.Protocol, Port: cp.Port})
					}
				}
			}
		}
		k.cache.rememberPorts(key, entries)
	}
	id := ir.SetID(len(k.rs.PortSets))
	k.rs.PortSets = append(k.rs.PortSets, ir.PortSet{ID: id, Name: "n" + shortHash(key), Entries: entries})
	k.portKey[key] = id
	return id
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:12]
}
