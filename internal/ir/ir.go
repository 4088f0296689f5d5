package ir

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Protocol is an IP protocol number.
type Protocol uint8

// Protocols policy can name.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// Protocols lists the supported protocols in a stable order.
var Protocols = []Protocol{TCP, UDP, SCTP}

// ProtocolOf returns the protocol for an IP protocol number; ok is false for protocols policy
// does not cover (ICMP, ...).
func ProtocolOf(n uint8) (p Protocol, ok bool) {
	switch p := Protocol(n); p {
	case TCP, UDP, SCTP:
		return p, true
	}
	return 0, false
}

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	case 0:
		return "any"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProtocol parses TCP, UDP or SCTP (any case).
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	case "SCTP":
		return SCTP, nil
	}
	return 0, fmt.Errorf("unsupported protocol %q (want TCP, UDP or SCTP)", s)
}

// Direction is the side of a flow a policy governs.
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Action is what a matching rule does. Pass is only used by the admin and baseline tiers
// (ClusterNetworkPolicy calls Allow "Accept": Policy.ActionName).
type Action uint8

const (
	Allow Action = iota
	Deny
	Pass
)

func (a Action) String() string {
	return [...]string{"Allow", "Deny", "Pass"}[a]
}

// TierKind says how a tier decides.
type TierKind uint8

const (
	// TierAdmin: AdminNetworkPolicies and Admin-tier ClusterNetworkPolicies. Policies in
	// priority order, rules in order, first match wins; Pass skips the rest of the tier.
	TierAdmin TierKind = iota
	// TierNetworkPolicy: a pod selected by any policy is isolated; any matching rule allows.
	TierNetworkPolicy
	// TierBaseline: Baseline-tier ClusterNetworkPolicies in priority order, then the
	// BaselineAdminNetworkPolicy. Rules in order, first match wins; Pass skips the rest of the
	// tier (to the default allow).
	TierBaseline
)

func (t TierKind) String() string {
	return [...]string{"AdminNetworkPolicy", "NetworkPolicy", "BaselineAdminNetworkPolicy"}[t]
}

// PodID indexes Ruleset.Pods.
type PodID int32

// Pod is a workload endpoint.
type Pod struct {
	ID          PodID
	Namespace   string
	Name        string
	Node        string
	IPs         []netip.Addr // empty when the pod has no address yet
	HostNetwork bool         // shares its node's addresses; not subject to pod policy
	Ports       []ContainerPort
}

// Key returns "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// IP returns the primary address (the zero Addr when there is none).
func (p *Pod) IP() netip.Addr {
	if len(p.IPs) == 0 {
		return netip.Addr{}
	}
	return p.IPs[0]
}

// ContainerPort is a port a pod declares.
type ContainerPort struct {
	Name     string
	Port     uint16
	Protocol Protocol
}

// Node is a cluster node.
type Node struct {
	Name     string
	IPs      []netip.Addr // InternalIP first
	PodCIDRs []netip.Prefix
	Zone     string // the topology.kubernetes.io/zone label, for topology hints
}

// SetID indexes Ruleset.Sets.
type SetID int32

// AddrSet is a set of addresses: exact IPs (pods, nodes) and CIDR blocks with exceptions.
// Sets are deduplicated by content, so rules that select the same peers share one set.
type AddrSet struct {
	ID   SetID
	Name string // stable name derived from the content, usable as an ipset or map name
	Desc string // what selected it, for humans
	IPs  []netip.Addr
	// Pods lists the pods whose addresses are in IPs (for explanations and identities).
	Pods   []PodID
	Blocks []Block
}

// Block is a CIDR minus exceptions (Kubernetes ipBlock; ANP networks have no exceptions).
type Block struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Contains reports whether the block holds ip.
func (b Block) Contains(ip netip.Addr) bool {
	if !b.CIDR.Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(ip) {
			return false
		}
	}
	return true
}

// Contains reports whether the set holds ip.
func (s *AddrSet) Contains(ip netip.Addr) bool {
	for _, a := range s.IPs {
		if a == ip {
			return true
		}
	}
	for _, b := range s.Blocks {
		if b.Contains(ip) {
			return true
		}
	}
	return false
}

// PortRange is an inclusive destination port range of one protocol. {P, 0, 65535} is every port.
type PortRange struct {
	Protocol Protocol
	First    uint16
	Last     uint16
}

// Contains reports whether the range holds port of protocol proto.
func (r PortRange) Contains(proto Protocol, port uint16) bool {
	return r.Protocol == proto && r.First <= port && port <= r.Last
}

func (r PortRange) String() string {
	switch {
	case r.First == 0 && r.Last == 65535:
		return "all " + r.Protocol.String() + " ports"
	case r.First == r.Last:
		return fmt.Sprintf("%d/%s", r.First, r.Protocol)
	}
	return fmt.Sprintf("%d-%d/%s", r.First, r.Last, r.Protocol)
}

// NamedPort is a port given by name, resolved on the destination pod. Set holds the resolution:
// the (destination IP, protocol, port) of every pod that declares the name with a matching
// protocol. Protocol 0 (ANP namedPort) accepts the name with any protocol.
type NamedPort struct {
	Name     string
	Protocol Protocol
	Set      SetID // indexes Ruleset.PortSets
}

// IPPort is one resolved destination.
type IPPort struct {
	IP       netip.Addr
	Protocol Protocol
	Port     uint16
}

// PortSet is the resolution of one named port.
type PortSet struct {
	ID      SetID
	Name    string
	Entries []IPPort
}

// Contains reports whether (ip, proto, port) is in the set.
func (s *PortSet) Contains(ip netip.Addr, proto Protocol, port uint16) bool {
	for _, e := range s.Entries {
		if e.IP == ip && e.Protocol == proto && e.Port == port {
			return true
		}
	}
	return false
}

// Ports is a rule's port condition: All, or any of Ranges or Named.
type Ports struct {
	All    bool
	Ranges []PortRange
	Named  []NamedPort
}

// Rule is one rule of a policy.
type Rule struct {
	Index  int    // position in the policy's ingress or egress list
	Name   string // ANP/BANP rule name, if any
	Action Action
	// AnyPeer is true when the rule names no peers (NetworkPolicy rules without from/to).
	AnyPeer bool
	Peers   []Peer
	Ports   Ports
}

// Peer is one peer clause of a rule, as a set of remote addresses.
type Peer struct {
	Set  SetID
	Desc string
}

// Kinds of policy objects, as Policy.Kind names them.
const (
	KindNetworkPolicy = "NetworkPolicy"
	KindANP           = "AdminNetworkPolicy"
	KindBANP          = "BaselineAdminNetworkPolicy"
	KindCNP           = "ClusterNetworkPolicy"
)

// Policy is one Kubernetes policy object's rules for one direction.
type Policy struct {
	Tier TierKind
	// Kind is the object's kind; "" means the tier's own (NetworkPolicy, AdminNetworkPolicy,
	// BaselineAdminNetworkPolicy). ClusterNetworkPolicies set KindCNP, in either admin tier.
	Kind      string
	Namespace string // empty for cluster-scoped kinds
	Name      string
	Priority  int32 // ANP and ClusterNetworkPolicy priority; 0 otherwise
	Direction Direction
	Subjects  []PodID
	Rules     []Rule
	// Staged: the object is annotated rampart.io/staged: "true". Only a Ruleset compiled with
	// the staged policies (compile.Options.Staged) holds such policies; none is enforced.
	Staged bool
}

// KindName is the policy object's kind.
func (p *Policy) KindName() string {
	if p.Kind != "" {
		return p.Kind
	}
	return p.Tier.String()
}

// TierName is a ClusterNetworkPolicy's spec.tier ("Admin" or "Baseline"); "" for other kinds.
func (p *Policy) TierName() string {
	if p.Kind != KindCNP {
		return ""
	}
	if p.Tier == TierBaseline {
		return "Baseline"
	}
	return "Admin"
}

// ActionName is an action as the policy's kind spells it: ClusterNetworkPolicy says Accept.
func (p *Policy) ActionName(a Action) string {
	if a == Allow && p.Kind == KindCNP {
		return "Accept"
	}
	return a.String()
}

// Ref names the policy for humans: "NetworkPolicy x/deny-all", "AdminNetworkPolicy p (priority 5)",
// "ClusterNetworkPolicy c (Baseline tier, priority 3)", "NetworkPolicy x/try [staged]".
func (p *Policy) Ref() string {
	var s string
	switch {
	case p.Kind == KindCNP:
		s = fmt.Sprintf("%s %s (%s tier, priority %d)", p.Kind, p.Name, p.TierName(), p.Priority)
	case p.Tier == TierAdmin:
		s = fmt.Sprintf("%s %s (priority %d)", p.Tier, p.Name, p.Priority)
	case p.Namespace != "":
		s = fmt.Sprintf("%s %s/%s", p.Tier, p.Namespace, p.Name)
	default:
		s = fmt.Sprintf("%s %s", p.Tier, p.Name)
	}
	if p.Staged {
		s += " [staged]"
	}
	return s
}

// Tier is an ordered group of policies sharing one decision procedure.
type Tier struct {
	Kind     TierKind
	Policies []Policy
}

// Service is a Service with its resolved backends and the fields kube-proxy reads
// (services.go turns them into each node's frontends).
type Service struct {
	Namespace  string
	Name       string
	ClusterIPs []netip.Addr
	// ExternalIPs (spec.externalIPs) and LoadBalancerIPs (status.loadBalancer.ingress[].ip)
	// reach the Service's ports from outside the cluster through any node.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// ExternalLocal is externalTrafficPolicy: Local: traffic from outside the cluster to a
	// node port or an external address goes only to endpoints on the node it arrived at, and
	// keeps its source address.
	ExternalLocal bool
	// InternalLocal is internalTrafficPolicy: Local: traffic from inside the cluster to a
	// ClusterIP goes only to endpoints on the client's node.
	InternalLocal bool
	// AffinitySeconds is sessionAffinity: ClientIP's timeout: a client keeps its backend while
	// it comes back within this many seconds (0: no affinity).
	AffinitySeconds uint32
	// HealthCheckNodePort answers, with externalTrafficPolicy: Local, whether the node has
	// local endpoints (0: none).
	HealthCheckNodePort uint16
	Ports               []ServicePort
}

// ServicePort is one service port and the endpoints behind it.
type ServicePort struct {
	Name     string
	Port     uint16
	Protocol Protocol
	// NodePort is the port every node's addresses serve it on (0: none).
	NodePort uint16
	Backends []Backend
}

// Backend is one endpoint of a service port.
type Backend struct {
	Pod  PodID // -1 when the endpoint is not a known pod
	IP   netip.Addr
	Port uint16
	// Node hosts the endpoint ("" when unknown: never local to any node).
	Node string
	// Terminating: a serving endpoint that is going away, used only where no ready one is
	// left (kube-proxy's fallback).
	Terminating bool
	// ZoneHints and NodeHints are the EndpointSlice's topology hints (hints.forZones,
	// hints.forNodes): the zones, and the nodes, that should prefer this endpoint for
	// cluster-wide traffic.
	ZoneHints []string
	NodeHints []string
}

// Ruleset is everything enforcement needs, resolved.
type Ruleset struct {
	Pods     []Pod
	Nodes    []Node
	Sets     []AddrSet
	PortSets []PortSet
	// Tiers in evaluation order, per direction (index by Direction).
	Tiers    [2][]Tier
	Services []Service

	// selected[dir][pod] lists (tier, policy) indexes selecting the pod, built by Index: pod
	// ids are indexes of Pods, and each direction's lists share one array.
	selected [2][][]PolicyRef
}

// PolicyRef locates a policy in Ruleset.Tiers[dir].
type PolicyRef struct{ Tier, Policy int }

// Index builds the per-pod lookup used by PoliciesFor. Compilers call it once.
func (r *Ruleset) Index() {
	n := len(r.Pods)
	for _, tiers := range r.Tiers {
		for _, t := range tiers {
			for _, p := range t.Policies {
				for _, s := range p.Subjects {
					n = max(n, int(s)+1) // hand-built rulesets may name pods they do not hold
				}
			}
		}
	}
	for d := range r.Tiers {
		count := make([]int32, n)
		total := 0
		for _, t := range r.Tiers[d] {
			for _, p := range t.Policies {
				for _, s := range p.Subjects {
					count[s]++
				}
				total += len(p.Subjects)
			}
		}
		all := make([]PolicyRef, total)
		sel := make([][]PolicyRef, n)
		off := 0
		for i, c := range count {
			sel[i] = all[off : off : off+int(c)]
			off += int(c)
		}
		for ti, t := range r.Tiers[d] {
			for pi, p := range t.Policies {
				for _, s := range p.Subjects {
					sel[s] = append(sel[s], PolicyRef{ti, pi})
				}
			}
		}
		for i := range sel {
			if len(sel[i]) == 0 {
				sel[i] = nil
			}
		}
		r.selected[d] = sel
	}
}

// PoliciesFor returns, in evaluation order, the policies of direction dir that select pod.
func (r *Ruleset) PoliciesFor(pod PodID, dir Direction) []PolicyRef {
	if int(pod) < 0 || int(pod) >= len(r.selected[dir]) {
		return nil
	}
	return r.selected[dir][pod]
}

// Policy returns the policy a ref points at.
func (r *Ruleset) Policy(dir Direction, ref PolicyRef) *Policy {
	return &r.Tiers[dir][ref.Tier].Policies[ref.Policy]
}

// PodByKey finds a pod by "namespace/name". Compiled rulesets hold their pods in key order, so
// a binary search finds it; a hand-built, unordered one falls back to a scan.
func (r *Ruleset) PodByKey(key string) *Pod {
	if i, ok := slices.BinarySearchFunc(r.Pods, key, func(p Pod, k string) int { return strings.Compare(p.Key(), k) }); ok {
		return &r.Pods[i]
	}
	for i := range r.Pods {
		if r.Pods[i].Key() == key {
			return &r.Pods[i]
		}
	}
	return nil
}
