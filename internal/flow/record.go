package flow

import (
	"net/netip"
	"strings"
	"time"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Record is one connection's flow record, as `rampart flows -o json` prints it.
type Record struct {
	Time        time.Time  `json:"time"` // when the record was published
	Node        string     `json:"node"`
	Source      Endpoint   `json:"source"`
	Destination Endpoint   `json:"destination"`
	Protocol    string     `json:"protocol"`
	Direction   string     `json:"direction"` // the side that decided: ingress | egress
	Verdict     string     `json:"verdict"`   // allowed | denied
	Policy      *PolicyRef `json:"policy"`    // null: no policy decided (not selected, default allow)
	Staged      *Staged    `json:"staged"`    // null: no staged policy would decide differently
	Packets     uint64     `json:"packets"`
	Bytes       uint64     `json:"bytes"`
	TCPFlags    string     `json:"tcp_flags"` // flags seen, e.g. "SYN,ACK,FIN"; empty for UDP and SCTP
	FirstSeen   time.Time  `json:"first_seen"`
	LastSeen    time.Time  `json:"last_seen"`
}

// Endpoint is one end of a flow.
type Endpoint struct {
	Namespace string      `json:"namespace,omitempty"`
	Pod       string      `json:"pod,omitempty"`
	IP        string      `json:"ip"`
	Port      uint16      `json:"port"`
	Service   *ServiceRef `json:"service,omitempty"` // destination only: the Service addressed
}

// ServiceRef is the Service frontend a client addressed before translation.
type ServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	IP        string `json:"ip"`
	Port      uint16 `json:"port"`
}

// PolicyRef names what decided a flow.
type PolicyRef struct {
	Kind string `json:"kind"` // NetworkPolicy | AdminNetworkPolicy | BaselineAdminNetworkPolicy | ClusterNetworkPolicy
	// Tier is a ClusterNetworkPolicy's spec.tier (Admin | Baseline).
	Tier      string `json:"tier,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Rule is the index in the policy's ingress or egress list; null for a denial by isolation
	// (no rule of the isolating NetworkPolicies matched).
	Rule     *int   `json:"rule"`
	RuleName string `json:"rule_name,omitempty"`
	Action   string `json:"action"` // Allow | Deny | Pass; Accept for a ClusterNetworkPolicy
	// IsolatedBy lists every NetworkPolicy isolating the pod, for a denial by isolation.
	IsolatedBy []PolicyName `json:"isolated_by,omitempty"`
}

// PolicyName is a policy's identity.
type PolicyName struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Staged is the verdict staged policies would give, where it differs or is theirs.
type Staged struct {
	Verdict string     `json:"verdict"`
	Policy  *PolicyRef `json:"policy"`
}

// Verdict strings.
const (
	Allowed = "allowed"
	Denied  = "denied"
)

// Tuple is a connection as the deciding side saw it (after Service translation).
type Tuple struct {
	Protocol ir.Protocol
	Src, Dst netip.AddrPort
}

// Subject is the address whose policy direction dir decides: the destination's for
// ingress, the source's for egress.
func (t Tuple) Subject(dir ir.Direction) netip.Addr {
	if dir == ir.Egress {
		return t.Src.Addr()
	}
	return t.Dst.Addr()
}

// Event is one observation of a dataplane: a denied packet, or the first packet of an allowed
// connection (New). Decider is resolved by the dataplane from the state it had programmed.
type Event struct {
	Time      time.Time
	Direction ir.Direction
	Allowed   bool
	Tuple     Tuple
	// Service is the frontend the client addressed, when the dataplane translated the packet.
	Service netip.AddrPort
	Decider Decider
	Bytes   uint64 // the packet's length
	// TCPFlags of the packet (TCP only), as in the TCP header's flags byte.
	TCPFlags uint8
	// Drop names the threat response that dropped the packet before policy ("": none, policy
	// decided). Such events (a sample of those drops) are for the threat detectors, not flow
	// records.
	Drop DropKind
}

// DropKind is the threat response that dropped a packet before policy.
type DropKind string

const (
	DropBlocklist  DropKind = "blocklist"  // from or to a blocked prefix (dataplane.Blocker)
	DropSynLimit   DropKind = "syn-limit"  // a SYN over its source's limit (dataplane.SynLimiter)
	DropQuarantine DropKind = "quarantine" // to or from a quarantined pod (dataplane.Quarantiner)
	DropShield     DropKind = "shield"     // a shield's virtual patch (dataplane.Shielder)
	// DropConnLimit is a SYN over its source's open connections (dataplane.ConnLimiter).
	DropConnLimit DropKind = "conn-limit"
)

// Decider is the deciding rule, in the IR's terms. The zero value: no policy decided.
type Decider struct {
	Known bool // false: no rule decided (default allow, or isolation for a denied event)
	Tier  ir.TierKind
	Kind  string // the policy's kind, "" for the tier's own (ir.Policy.Kind)
	// Namespace/Name name the policy; Rule is its rule index, RuleName its name.
	Namespace, Name string
	Rule            int
	RuleName        string
	Action          ir.Action
	// Unresolved is set when the dataplane's id could not be resolved (programs of another
	// agent's generation): the record says so instead of guessing.
	Unresolved bool
	// Isolating, for a denial no rule decided, are the NetworkPolicies that isolated the pod
	// in the state the dataplane had programmed (Resolver.Isolating of that state); empty, the
	// record names those of the state in force when it is built.
	Isolating []*ir.Policy
}

// Counts are a connection's totals from the dataplane's connection tracking, both directions.
type Counts struct {
	Packets, Bytes uint64
	TCPFlags       uint8
	// Gone is true when the connection is no longer tracked (closed or expired); Closed when
	// the tracking says it is closing or closed (a TCP FIN or RST was seen).
	Gone, Closed bool
}

// TCP flag bits (the header's flags byte).
const (
	FlagFIN = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
	FlagECE
	FlagCWR
)

// FlagString renders TCP flags as "SYN,ACK,...".
func FlagString(f uint8) string {
	names := []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
	var out []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return strings.Join(out, ",")
}
