// Package dataplane defines the interface every enforcement backend implements. A dataplane
// takes an ir.Ruleset and makes one node's kernel enforce it for the pods local to that node:
// the iptables+ipset backend lives in iptables/, the eBPF backend in ebpf/. Backends render a
// pure, deterministic spec from the IR first and then apply it, so rendering is testable
// without root and applying is the only step that touches the kernel.
package dataplane

import (
	"context"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Node describes the node a dataplane instance enforces on.
type Node struct {
	Name string
	// Interface returns the host-side interface of a local pod's veth, and false for pods that
	// do not live on this node (or have no interface, such as host-network pods).
	Interface func(pod *ir.Pod) (string, bool)
	// Uplink is the node's interface toward the other nodes (optional). The eBPF dataplane
	// hooks it to translate the node's own traffic to Services, which crosses no pod veth.
	Uplink string
}

// Dataplane enforces a Ruleset on one node.
type Dataplane interface {
	// Sync makes the node enforce rs. It is atomic: when it fails, the previously synced
	// policy stays fully in force, and the error says what failed.
	Sync(ctx context.Context, rs *ir.Ruleset) error
	// Close removes everything the dataplane installed on the node.
	Close() error
}
