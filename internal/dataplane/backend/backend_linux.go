// Package backend constructs a node's dataplane from its Kind: the one place that knows every
// backend, so callers (the agent, the lab, benchmarks) need no switch of their own.
package backend

import (
	"fmt"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/dataplane/ctsweep"
	"github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/dataplane/iptables"
	"github.com/rampart-sec/rampart/internal/policy"
)

// New returns the dataplane of kind for node. KindAuto must be resolved first (doctor.Pick).
func New(kind dataplane.Kind, node dataplane.Node, opts dataplane.Options) (dataplane.Dataplane, error) {
	switch kind {
	case dataplane.KindIPTables:
		return &iptablesPlane{Dataplane: iptables.New(node, iptables.NetnsRunner{Netns: opts.Netns}), netns: opts.Netns}, nil
	case dataplane.KindEBPF:
		dp := ebpf.New(node, opts.Netns)
		dp.PinDir = opts.PinDir
		if opts.Attach != "" {
			dp.Attach = opts.Attach
		}
		return dp, nil
	case dataplane.KindNone:
		return dataplane.None{}, nil
	}
	return nil, fmt.Errorf("dataplane %q is not available", kind)
}

// iptablesPlane is the iptables dataplane with the kernel's conntrack swept after a change (its
// rules accept established flows without a new decision) and rules that stay when the agent
// stops: they live in the kernel, not in the process.
type iptablesPlane struct {
	*iptables.Dataplane
	netns string
}

var (
	_ dataplane.Sweeper  = (*iptablesPlane)(nil)
	_ dataplane.Releaser = (*iptablesPlane)(nil)
	_ dataplane.Sweeper  = (*ebpf.Dataplane)(nil)
	_ dataplane.Releaser = (*ebpf.Dataplane)(nil)

	_ dataplane.CounterReader = (*ebpf.Dataplane)(nil)
	_ dataplane.Guarder       = (*ebpf.Dataplane)(nil)
)

// Sweep removes conntrack entries of connections the evaluator now denies.
func (p *iptablesPlane) Sweep(ev *policy.Evaluator) (int, error) {
	n, err := ctsweep.Sweep(p.netns, ev)
	return int(n), err
}

// Release leaves the rules and sets in the kernel.
func (p *iptablesPlane) Release() error { return nil }
