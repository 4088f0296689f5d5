package controller

import (
	"context"
	"net/netip"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/cgroup"
)

// Fabric is the kernel side of a lab: network namespaces for nodes and pods, links and routes
// between them, the servers on every declared port, and probes. Package lab implements it.
type Fabric interface {
	// Ensure makes the namespaces, links, routes and listeners match topo: pods are added,
	// removed or changed without disturbing the others.
	Ensure(ctx context.Context, topo Topology) error
	// NodeNetns names the network namespace of a node.
	NodeNetns(node string) string
	// PodInterface names the host-side interface of a pod's veth in its node's namespace.
	PodInterface(namespace, name string) string
	// Probe runs probes from pods' namespaces, in parallel.
	Probe(ctx context.Context, probes []ProbeSpec) []ProbeResult
	// Exec runs a command inside a pod's network namespace.
	Exec(ctx context.Context, namespace, name string, argv []string) ([]byte, error)
	// UseCgroups gives every pod, now and later, a threaded cgroup below lab, and runs each
	// probe on a thread moved into its pod's group (and back to home afterwards), so that
	// socket hooks attached to lab see the pods' sockets as they would a container's.
	UseCgroups(lab, home *cgroup.Group) error
	// Teardown removes everything the lab created.
	Teardown() error
}

// Topology is the lab in plain terms.
type Topology struct {
	Nodes []TopoNode
	Pods  []TopoPod
	// DataplaneRoutesServices: the dataplane routes the Service range in the nodes (eBPF's
	// route program); otherwise the fabric routes it out of each node's uplink, where the
	// iptables dataplane's NAT rules catch it.
	DataplaneRoutesServices bool
	// External are the routes of the external client (ExternalClient, outside the cluster on
	// the nodes' uplink network): each external or load-balancer address through a node, as
	// a load balancer or the network in front of the cluster would send its traffic.
	External []ExternalRoute
}

// ExternalRoute sends the external client's traffic for Dst to a node.
type ExternalRoute struct {
	Dst netip.Addr
	Via netip.Addr // a node's address
}

// TopoNode is one lab node.
type TopoNode struct {
	Name    string
	Index   int
	IP      netip.Addr
	PodCIDR netip.Prefix
}

// TopoPod is one pod.
type TopoPod struct {
	Namespace, Name, Node string
	IP                    netip.Addr
	HostNetwork           bool
	Ports                 []TopoPort
}

// TopoPort is a served port.
type TopoPort struct {
	Name     string
	Port     uint16
	Protocol string // TCP, UDP or SCTP
}

// ProbeSpec is one connection attempt from a pod to an address.
type ProbeSpec struct {
	FromNamespace, FromName string
	// External: from the external client instead of a pod.
	External bool
	Dst      netip.AddrPort
	Protocol string
	Timeout  time.Duration
}

// ProbeResult says whether the server answered.
type ProbeResult struct {
	Connected bool
	Ms        float64
	Err       string
	// Server is the pod that answered, and Client the client's address as it saw it (TCP
	// and UDP).
	Server, Client string
}
