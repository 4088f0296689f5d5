// Package dataplane defines the interface every enforcement backend implements, the kinds of
// backend, and the optional capabilities a backend may have (named interfaces: Sweeper,
// CounterReader, Releaser, Guarder, FlowReader). A dataplane takes an ir.Ruleset and makes one node's
// kernel enforce it for the pods local to that node: the iptables+ipset backend lives in iptables/, the eBPF
// backend in ebpf/, and backend/ constructs either from a Kind. Backends render a pure,
// deterministic spec from the IR first and then apply it, so rendering is testable without
// root and applying is the only step that touches the kernel.
package dataplane

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Kind names a backend.
type Kind string

const (
	KindIPTables Kind = "iptables"
	KindEBPF     Kind = "ebpf"
	// KindNone enforces nothing (a lab without policy, for comparison).
	KindNone Kind = "none"
	// KindAuto is resolved by the caller to eBPF where the kernel serves it, iptables otherwise.
	KindAuto Kind = "auto"
)

// ParseKind checks a user's choice of dataplane.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindIPTables, KindEBPF, KindNone, KindAuto:
		return k, nil
	}
	return "", fmt.Errorf("dataplane %q: want iptables, ebpf, none or auto", s)
}

// Options configure a backend beyond its Node.
type Options struct {
	// Netns is the named network namespace the node's kernel state lives in ("" for the
	// current one: the agent on a real node).
	Netns string
	// PinDir (eBPF) is a bpffs directory where programs and flow state are pinned, so that
	// enforcement outlives the process and a restarted agent adopts it.
	PinDir string
	// Attach (eBPF) forces an attachment kind: "auto" (TCX, else clsact), "tcx" or "clsact".
	Attach string
	// Cgroup (eBPF, optional) is a cgroup v2 directory whose processes (the pods') get
	// connect-time Service load balancing: their sockets connect to a backend directly, and
	// the per-packet translation only serves traffic from elsewhere. Never the hierarchy's root.
	Cgroup string
	// NoFlowEvents turns flow events off in the dataplane itself (measurements of their cost).
	NoFlowEvents bool
	// MapSizes (eBPF) sizes its maps by kind (ebpf.MapKinds: services, backends, policy,
	// conntrack, ...) where the defaults do not fit; a state needing more fails its sync whole.
	MapSizes map[string]uint32
	// Frontend (eBPF, optional) names the Service address a TCP connection's client addressed
	// where a connect-time load balancer the dataplane does not own translated it (the lab's,
	// shared by its nodes); with Cgroup the dataplane asks its own.
	Frontend func(client, backend netip.AddrPort) (netip.AddrPort, bool)
}

// Node describes the node a dataplane instance enforces on.
type Node struct {
	Name string
	// Interface returns the host-side interface of a local pod's veth, and false for pods that
	// do not live on this node (or have no interface, such as host-network pods).
	Interface func(pod *ir.Pod) (string, bool)
	// Uplink is the node's interface toward the other nodes and the outside (optional).
	// Traffic arriving on it is from outside: node ports and external and load-balancer
	// addresses are translated for it as externalTrafficPolicy says. The eBPF dataplane also
	// hooks it to translate the node's own traffic to Services, which crosses no pod veth.
	Uplink string
	// PodInterfacePrefix names the host-side interfaces of pods (the CNI plugin's veth
	// prefix, optional). Where a dataplane supports it, traffic on an interface with this
	// prefix that it has not programmed yet is dropped, so a new pod never sends or receives
	// a packet before its policy is in force (iptables: a guard chain in the rules; eBPF: a
	// deny program attached when the interface appears, see Guarder).
	PodInterfacePrefix string
	// KubeProxy says kube-proxy translates Services on this node: the dataplane enforces
	// policy on the translated traffic and leaves Services alone. Only the iptables dataplane
	// works beside kube-proxy: its filter rules see traffic after kube-proxy's DNAT, while the
	// eBPF programs decide before netfilter and so translate Services themselves.
	KubeProxy bool
	// FlowLogGroup (iptables) is the NFLOG group flow events are logged to in the node's
	// namespace; 0: none.
	FlowLogGroup uint16
}

// Dataplane enforces a Ruleset on one node.
type Dataplane interface {
	// Sync makes the node enforce rs. It is atomic: when it fails, the previously synced
	// policy stays fully in force, and the error says what failed.
	Sync(ctx context.Context, rs *ir.Ruleset) error
	// Close removes everything the dataplane installed on the node.
	Close() error
}

// Sweeper is a dataplane that can cut tracked connections the evaluator now denies, so that a
// policy change also ends the established flows it forbids. It returns how many it removed.
type Sweeper interface {
	Sweep(ev *policy.Evaluator) (int, error)
}

// Collector is a dataplane with its own connection tracking, whose flows idle past their
// timeout the agent has it remove periodically (the kernel's conntrack ages its own entries).
// It returns how many flows it removed.
type Collector interface {
	CollectGarbage() (int, error)
}

// CounterReader is a dataplane that counts packets by name (allowed/denied per direction and
// its own path counters); counters only grow.
type CounterReader interface {
	Counters() (map[string]uint64, error)
}

// Releaser is a dataplane that can let go of the node while leaving enforcement in force (an
// agent stopping or being upgraded); a later instance adopts what it finds.
type Releaser interface {
	Release() error
}

// FlowReader is a dataplane that reports flow events (denied packets, first packets of allowed
// connections) with the deciding rule named, until ctx ends. Dataplanes that can also read
// connections' counts implement flow.ConnCounter.
type FlowReader interface {
	ReadFlows(ctx context.Context, sink flow.Sink) error
}

// CapacityReporter is a dataplane whose state has fixed room (BPF maps): the most entries of
// each kind EntryCounter reports. A Sync that needs more fails and names the kind.
type CapacityReporter interface {
	Capacities() map[string]int
}

// EntryCounter is a dataplane that says how much state it programmed at its last Sync, by
// kind (iptables rules and ipset members; BPF map entries), for rampart_programmed_entries.
type EntryCounter interface {
	Entries() map[string]int
}

// Guarder is a dataplane that can hold a pod interface it has not programmed yet under deny
// until its next Sync programs it (the agent calls it when such an interface appears).
type Guarder interface {
	Guard(iface string) error
}

// Blocker is a dataplane that drops packets from or to a set of prefixes before conntrack and
// policy (threat feeds, automatic blocks), reporting a sample of the drops as flow events with
// Blocked set. SetBlocked replaces the whole set; when it fails the previous set stays.
type Blocker interface {
	SetBlocked(prefixes []netip.Prefix) error
}

// SynLimit limits new TCP connection attempts toward Target: each source gets a token bucket
// of Rate SYNs per second holding at most Burst.
type SynLimit struct {
	Target      netip.Addr
	Rate, Burst uint32
}

// SynLimiter is a dataplane that can rate-limit TCP SYNs per source toward chosen pods (the
// answer to a SYN flood), reporting a sample of the drops as flow events with Limited set.
// SetSynLimits replaces the whole set; when it fails the previous set stays.
type SynLimiter interface {
	SetSynLimits(limits []SynLimit) error
}

// Quarantine cuts every packet to or from Pods, established connections included, but those
// to one of Allow's protocols and destination ports and their replies.
type Quarantine struct {
	Pods  []netip.Addr
	Allow []PortProtocol
}

// PortProtocol is a transport protocol and port.
type PortProtocol struct {
	Protocol ir.Protocol
	Port     uint16
}

// Quarantiner is a dataplane that can quarantine pods (before conntrack and policy), reporting
// a sample of the drops as flow events with Blocked set. SetQuarantine replaces the whole
// quarantine; when it fails the previous one stays.
type Quarantiner interface {
	SetQuarantine(q Quarantine) error
}

// MSSShield drops TCP SYNs (and SYN-ACKs) toward Pods that carry an MSS option below Min:
// the SACK Panic mitigation (CVE-2019-11477/11478/11479). Min 0 turns it off.
type MSSShield struct {
	Pods []netip.Addr
	Min  uint16
}

// Shielder is a dataplane that enforces shields (virtual patches) before conntrack and policy,
// reporting a sample of the drops as flow events with Drop set. SetMSSShield replaces the whole
// shield; when it fails the previous one stays.
type Shielder interface {
	SetMSSShield(s MSSShield) error
}

// ConnLimit caps the TCP connections each source holds open to Target (the connection-limit
// shield): a SYN that would open one more is dropped. The shield's rate of new connections is
// a SynLimit.
type ConnLimit struct {
	Target netip.Addr
	Max    uint32
}

// ConnLimiter is a dataplane that can cap each source's open connections toward chosen pods,
// reporting a sample of the drops as flow events (DropConnLimit). SetConnLimits replaces the
// whole set; when it fails the previous set stays.
type ConnLimiter interface {
	SetConnLimits(limits []ConnLimit) error
}

// IPv4Prefix returns p masked as an IPv4 prefix (a 4-in-6 one converted), and false for an IPv6
// or invalid one: the threat responses judge IPv4.
func IPv4Prefix(p netip.Prefix) (netip.Prefix, bool) {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if !p.IsValid() || !p.Addr().Is4() {
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}

// None enforces nothing.
type None struct{}

// Sync does nothing.
func (None) Sync(context.Context, *ir.Ruleset) error { return nil }

// Close does nothing.
func (None) Close() error { return nil }
