// Package backend constructs a node's dataplane from its Kind: the one place that knows every
// backend, so callers (the agent, the lab, benchmarks) need no switch of their own.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/dataplane/ctsweep"
	"github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/dataplane/iptables"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/nsexec"
	"github.com/rampart-sec/rampart/internal/policy"
)

// New returns the dataplane of kind for node. KindAuto must be resolved first (doctor.Pick).
func New(kind dataplane.Kind, node dataplane.Node, opts dataplane.Options) (dataplane.Dataplane, error) {
	switch kind {
	case dataplane.KindIPTables:
		if !opts.NoFlowEvents && node.FlowLogGroup == 0 {
			node.FlowLogGroup = iptables.DefaultFlowGroup
		}
		return &iptablesPlane{Dataplane: iptables.New(node, iptables.NetnsRunner{Netns: opts.Netns}), netns: opts.Netns, ct: ctsweep.NewTracker(opts.Netns)}, nil
	case dataplane.KindEBPF:
		dp := ebpf.New(node, opts.Netns)
		dp.PinDir = opts.PinDir
		dp.NoFlowEvents = opts.NoFlowEvents
		dp.MapSizes = opts.MapSizes
		if opts.Attach != "" {
			dp.Attach = opts.Attach
		}
		if opts.Cgroup != "" || opts.Frontend != nil {
			return &ebpfPlane{Dataplane: dp, node: node.Name, netns: opts.Netns, cgroup: opts.Cgroup, sizes: opts.MapSizes, frontend: opts.Frontend}, nil
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
	ct    *ctsweep.Tracker
}

var (
	_ dataplane.Sweeper  = (*iptablesPlane)(nil)
	_ dataplane.Releaser = (*iptablesPlane)(nil)
	_ dataplane.Sweeper  = (*ebpf.Dataplane)(nil)
	_ dataplane.Releaser = (*ebpf.Dataplane)(nil)

	_ dataplane.CounterReader = (*ebpf.Dataplane)(nil)
	_ dataplane.Guarder       = (*ebpf.Dataplane)(nil)

	_ dataplane.Sweeper       = (*ebpfPlane)(nil)
	_ dataplane.Collector     = (*ebpfPlane)(nil)
	_ dataplane.Collector     = (*ebpf.Dataplane)(nil)
	_ dataplane.Releaser      = (*ebpfPlane)(nil)
	_ dataplane.CounterReader = (*ebpfPlane)(nil)
	_ dataplane.Guarder       = (*ebpfPlane)(nil)

	_ dataplane.EntryCounter = (*iptablesPlane)(nil)
	_ dataplane.EntryCounter = (*ebpfPlane)(nil)
	_ dataplane.FlowReader   = (*iptablesPlane)(nil)
	_ flow.ConnCounter       = (*iptablesPlane)(nil)
	_ flow.ServiceFinder     = (*iptablesPlane)(nil)
	_ flow.ServiceFinder     = (*ebpfPlane)(nil)
	_ dataplane.FlowReader   = (*ebpf.Dataplane)(nil)
	_ flow.ConnCounter       = (*ebpf.Dataplane)(nil)
	_ dataplane.FlowReader   = (*ebpfPlane)(nil)
	_ flow.ConnCounter       = (*ebpfPlane)(nil)

	// The threat engine's responses, on both dataplanes.
	_ dataplane.Blocker     = (*iptablesPlane)(nil)
	_ dataplane.Blocker     = (*ebpfPlane)(nil)
	_ dataplane.SynLimiter  = (*iptablesPlane)(nil)
	_ dataplane.SynLimiter  = (*ebpfPlane)(nil)
	_ dataplane.Quarantiner = (*iptablesPlane)(nil)
	_ dataplane.Quarantiner = (*ebpfPlane)(nil)
	_ dataplane.Shielder    = (*iptablesPlane)(nil)
	_ dataplane.Shielder    = (*ebpfPlane)(nil)
	_ dataplane.Blocker     = (*ebpf.Dataplane)(nil)
)

// ebpfPlane is the eBPF dataplane plus connect-time Service load balancing in a cgroup (the
// socket programs are attached at the first Sync and get the same Services at every one), or
// beside one it does not own (frontend).
type ebpfPlane struct {
	*ebpf.Dataplane
	node     string
	netns    string // the node's network namespace ("": the agent's own)
	cgroup   string
	sizes    ebpf.MapSizes
	sock     atomic.Pointer[ebpf.SockLB] // read by the flow aggregator too
	frontend func(client, backend netip.AddrPort) (netip.AddrPort, bool)
}

// ServiceOf names the Service a TCP or UDP flow's client addressed when a connect-time load
// balancer sent its socket to the backend (the packets never carried the Service address).
func (p *ebpfPlane) ServiceOf(c flow.Conn) (netip.AddrPort, bool) {
	if c.Tuple.Protocol != ir.TCP && c.Tuple.Protocol != ir.UDP {
		return netip.AddrPort{}, false
	}
	if sock := p.sock.Load(); sock != nil {
		return sock.Frontend(c.Tuple.Src, c.Tuple.Dst)
	}
	if p.frontend != nil {
		return p.frontend(c.Tuple.Src, c.Tuple.Dst)
	}
	return netip.AddrPort{}, false
}

func (p *ebpfPlane) Sync(ctx context.Context, rs *ir.Ruleset) error {
	if err := p.Dataplane.Sync(ctx, rs); err != nil {
		return err
	}
	if p.cgroup == "" {
		return nil
	}
	sock := p.sock.Load()
	if sock == nil {
		s, err := ebpf.NewSockLB(p.cgroup, p.sizes)
		if err != nil {
			return fmt.Errorf("connect-time Services: %w", err)
		}
		// The node's own sockets (host-network pods) reach node ports on 127.0.0.1.
		cookie, err := nsexec.NetnsCookie(p.netns)
		if err == nil {
			err = s.SetHostNetns([]uint64{cookie})
		}
		if err != nil {
			s.Close()
			return fmt.Errorf("connect-time Services: %w", err)
		}
		sock = s
		p.sock.Store(s)
	}
	if err := sock.Sync(rs, p.node); err != nil {
		return fmt.Errorf("connect-time Services: %w", err)
	}
	return nil
}

// Release detaches the socket programs (they belong to the process; Services stay served per
// packet until a new agent attaches its own) and leaves the pinned enforcement in force.
func (p *ebpfPlane) Release() error {
	return errors.Join(p.closeSock(), p.Dataplane.Release())
}

func (p *ebpfPlane) Close() error {
	return errors.Join(p.closeSock(), p.Dataplane.Close())
}

func (p *ebpfPlane) closeSock() error {
	sock := p.sock.Swap(nil)
	if sock == nil {
		return nil
	}
	err := sock.Close()
	return err
}

// Sweep removes conntrack entries of connections the evaluator now denies.
func (p *iptablesPlane) Sweep(ev *policy.Evaluator) (int, error) {
	n, err := p.ct.Sweep(ev)
	return int(n), err
}

// Close removes the rules and stops following conntrack.
func (p *iptablesPlane) Close() error {
	return errors.Join(p.ct.Close(), p.Dataplane.Close())
}

// ReadFlows reads the rules' NFLOG flow events in the node's namespace, with conntrack's
// accounting turned on there so that ConnCounts has counts. Where it cannot be (a read-only
// /proc/sys), records go on with the counts of their events, and the log says so.
func (p *iptablesPlane) ReadFlows(ctx context.Context, sink flow.Sink) error {
	if err := ctsweep.EnableAccounting(p.netns); err != nil {
		slog.Warn("flow records of allowed connections will count only their first packet: set net.netfilter.nf_conntrack_acct=1 on the node", "err", err)
	}
	return p.Dataplane.ReadFlows(ctx, p.netns, sink)
}

// ConnCounts reads connections' counts from the kernel's conntrack.
func (p *iptablesPlane) ConnCounts(conns []flow.Conn) ([]flow.Counts, error) {
	return p.ct.Counts(conns)
}

// ServiceOf names the Service address a connection's client addressed, from the conntrack
// entries the sweep follows: netfilter's NAT (rampart's Service chains or kube-proxy's)
// translated it before the rules, and so before the NFLOG event, saw the packet.
func (p *iptablesPlane) ServiceOf(c flow.Conn) (netip.AddrPort, bool) {
	return p.ct.Frontend(uint8(c.Tuple.Protocol), c.Tuple.Src, c.Tuple.Dst)
}

// Release leaves the rules and sets in the kernel, and stops following conntrack.
func (p *iptablesPlane) Release() error { return p.ct.Close() }
