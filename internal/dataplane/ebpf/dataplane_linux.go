package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/nsexec"
)

// Dataplane enforces policy with the BPF programs on the host side of each local pod's veth,
// in one network namespace (a lab node, or the host on a real node).
//
// Each Sync loads a new generation of programs and maps, fills the maps completely, and then
// switches every TCX link to the new programs (link.Update), so a packet sees either the old
// tables or the new ones, never a half-written state. Flow state (conntrack, reverse NAT) is
// carried from one generation to the next, so established flows keep passing. Services are
// load-balanced by the programs too (DNAT on the client's veth, reverse NAT on its replies):
// a node under this dataplane has no iptables rules at all.
type Dataplane struct {
	node  dataplane.Node
	netns string

	mu    sync.Mutex
	objs  *Objects
	links map[string][2]link.Link // by interface: from_pod (TCX ingress), to_pod (TCX egress)
}

var _ dataplane.Dataplane = (*Dataplane)(nil)

// New returns a dataplane for node working in the named network namespace ("" for the current).
func New(node dataplane.Node, netnsName string) *Dataplane {
	return &Dataplane{node: node, netns: netnsName, links: map[string][2]link.Link{}}
}

// Sync builds the tables for rs and switches the node to them.
func (d *Dataplane) Sync(ctx context.Context, rs *ir.Ruleset) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	local := func(p *ir.Pod) bool { _, ok := d.node.Interface(p); return ok }
	tables, err := Build(rs, local)
	if err != nil {
		return err
	}
	next, err := Load(d.objs)
	if err != nil {
		return err
	}
	err = d.inNetns(func() error {
		ifindex := map[ir.PodID]uint32{}
		for id := range tables.Endpoints {
			name, _ := d.node.Interface(&rs.Pods[id])
			iface, err := net.InterfaceByName(name)
			if err != nil {
				return fmt.Errorf("interface %s: %w", name, err)
			}
			ifindex[id] = uint32(iface.Index)
		}
		if err := next.Fill(rs, tables, func(id ir.PodID) uint32 { return ifindex[id] }); err != nil {
			return fmt.Errorf("fill maps: %w", err)
		}
		return d.attach(rs, tables, ifindex, next)
	})
	if err != nil {
		next.Close()
		return err
	}
	if d.objs != nil {
		d.objs.Close() // the links hold the new programs; the old generation can go
	}
	d.objs = next
	return nil
}

// attach points every local pod's links at the new programs, creating missing links and
// removing those of pods that left.
func (d *Dataplane) attach(rs *ir.Ruleset, tables *Tables, ifindex map[ir.PodID]uint32, o *Objects) error {
	want := map[string]int{}
	for id := range tables.Endpoints {
		name, _ := d.node.Interface(&rs.Pods[id])
		want[name] = int(ifindex[id])
	}
	var errs []error
	for name, idx := range want {
		ls, ok := d.links[name]
		if ok {
			errs = append(errs, ls[0].Update(o.objs.FromPod), ls[1].Update(o.objs.ToPod))
			continue
		}
		in, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: o.objs.FromPod, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			errs = append(errs, fmt.Errorf("attach to %s: %w", name, err))
			continue
		}
		out, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: o.objs.ToPod, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			in.Close()
			errs = append(errs, fmt.Errorf("attach to %s: %w", name, err))
			continue
		}
		d.links[name] = [2]link.Link{in, out}
	}
	for name, ls := range d.links {
		if _, ok := want[name]; !ok {
			ls[0].Close()
			ls[1].Close()
			delete(d.links, name)
		}
	}
	return errors.Join(errs...)
}

// Close detaches every program and releases the maps.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for name, ls := range d.links {
		errs = append(errs, ls[0].Close(), ls[1].Close())
		delete(d.links, name)
	}
	if d.objs != nil {
		errs = append(errs, d.objs.Close())
		d.objs = nil
	}
	return errors.Join(errs...)
}

// inNetns runs fn in the dataplane's namespace: interface indexes and TCX attachments are
// resolved in the caller's network namespace.
func (d *Dataplane) inNetns(fn func() error) error { return nsexec.Do(d.netns, fn) }
