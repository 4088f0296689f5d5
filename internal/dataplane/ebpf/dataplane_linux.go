package ebpf

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/nsexec"
)

// Dataplane enforces policy with the BPF programs on the host side of each local pod's veth,
// in one network namespace (a lab node, or the host on a real node).
//
// The programs are loaded once. The tables of policy and Services exist twice: each Sync
// writes only what changed into the pair not in force and then switches the programs to it in
// one map write, so a packet sees either the old tables or the new ones, never a half-written
// state, and the programs, their attachments and the flow state (conntrack, reverse NAT) stay,
// so established flows keep passing. Services are load-balanced by the programs too (DNAT on the
// client's veth, reverse NAT on its replies) for sockets the connect-time balancer (SockLB)
// does not see, and, given Node.Uplink, for the node's own packets (a route program on the
// Service range): a node under this dataplane has no iptables rules at all. Packets between
// two local pods are judged for both ends at the source's veth and handed straight to the
// destination pod (bpf_redirect_peer). The threat engine's responses (SetBlocked, SetSynLimits)
// are maps every generation shares: a blocklist checked first by every program and by XDP on
// the uplink, per-source SYN token buckets toward limited pods, quarantined pods, and shields.
type Dataplane struct {
	node  dataplane.Node
	netns string

	// Attach is how programs are attached: AttachAuto (TCX, else clsact), AttachTCX or
	// AttachClsact. Set it before the first Sync.
	Attach string
	// PinDir, a directory on a bpffs, makes enforcement outlive the process: TCX links and the
	// flow-state maps (conntrack, reverse NAT) are pinned there, Close leaves them in force,
	// and the first Sync of a new Dataplane on the same directory adopts them, so established
	// flows keep passing across a restart. Remove takes everything away. Set before the first
	// Sync.
	PinDir string

	// NoFlowEvents stops the programs from writing flow events (set before the first Sync).
	NoFlowEvents bool
	// MapSizes sizes the maps where bpf/policy.c's sizes do not fit (set before the first Sync).
	MapSizes MapSizes

	mu   sync.Mutex
	objs *Objects
	// tables numbers endpoints, identities and rules alike from one Sync to the next.
	tables Builder
	// gen is the generation in force; gens keeps the rule tables and Rulesets of the last few,
	// so that events written by a generation just replaced still resolve to what it enforced.
	gen     uint32
	gens    map[uint32]generation
	synced  chan struct{} // closed at the first successful Sync
	entries map[string]int
	links   map[string]attachment // by interface
	uplink  attachment
	// ifaces are the local pods' veths as the last Sync found them, by name.
	ifaces map[string]Interface
	// guards hold pod interfaces not programmed yet under deny (Guard); Sync takes them over.
	guards map[string]attachment
	deny   *ebpf.Program
	xdp    link.Link // the uplink's XDP program (blocklist early drop)

	// blockWant is the blocklist SetBlocked asked for (nil: none given yet); blockHave what the
	// blocklist map holds (nil: unknown, read from the map when next written).
	blockWant, blockHave map[netip.Prefix]bool
	// blockSynced: the map holds blockWant, so writing it again writes nothing.
	blockSynced bool
	// synWant are the SYN limits SetSynLimits asked for, by target (nil: none given yet);
	// quarWant the quarantine SetQuarantine asked for (nil: none given yet).
	synWant  map[uint32]policySynLimit
	quarWant *dataplane.Quarantine
	// shieldWant are the shields SetMSSShield asked for, by pod (nil: none given yet);
	// connWant the connection limits SetConnLimits asked for.
	shieldWant map[uint32]policyShield
	connWant   map[uint32]uint32
}

var _ dataplane.Dataplane = (*Dataplane)(nil)

// New returns a dataplane for node working in the named network namespace ("" for the current).
func New(node dataplane.Node, netnsName string) *Dataplane {
	return &Dataplane{node: node, netns: netnsName, links: map[string]attachment{}, guards: map[string]attachment{},
		gen: rand.Uint32(), gens: map[uint32]generation{}, synced: make(chan struct{})}
}

// Sync builds the tables for rs and switches the node to them. The first Sync loads the
// programs; later ones write only what changed into the tables' slot not in force and then
// put it in force (Objects.write), so the programs and their attachments stay as they are. A
// failed write leaves the tables in force untouched; an error after the switch (attaching a
// new pod's interface) leaves the new tables in force and is returned, for the caller to retry.
func (d *Dataplane) Sync(ctx context.Context, rs *ir.Ruleset) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	local := func(p *ir.Pod) bool { _, ok := d.node.Interface(p); return ok }
	tables, err := d.tables.Build(rs, local)
	if err != nil {
		return err
	}
	o, fresh := d.objs, d.objs == nil
	if fresh {
		if o, err = d.loadFirst(); err != nil {
			return err
		}
	}
	gen := d.gen + 1
	err = d.inNetns(func() error {
		names := make(map[ir.PodID]string, len(tables.Endpoints))
		for id := range tables.Endpoints {
			names[id], _ = d.node.Interface(&rs.Pods[id])
		}
		ifaces, err := d.interfaces(names)
		if err != nil {
			return err
		}
		o.node = d.node.Name
		c := o.contentOf(rs, tables, func(id ir.PodID) Interface { return ifaces[id] })
		if err := o.write(c, gen); err != nil {
			return fmt.Errorf("write maps: %w", err)
		}
		d.generationInForce(gen, tables, rs)
		if fresh {
			// The other slot too, so that the next change writes only its difference (an empty
			// slot would be written whole, on the first change users make).
			if err := o.write(c, gen+1); err != nil {
				return fmt.Errorf("write maps: %w", err)
			}
			gen++
			d.generationInForce(gen, tables, rs)
		}
		// Only now the links: a new pod's interface is attached once its endpoint is in force.
		if err := d.attach(rs, tables, ifaces, o, fresh); err != nil {
			return err
		}
		return d.syncHost(o)
	})
	if err == nil && fresh && d.PinDir != "" {
		err = o.pinFlowState(d.PinDir)
	}
	if err != nil && fresh {
		d.blockHave, d.blockSynced = nil, false // the blocklist goes with these maps
		o.Close()
		return err
	}
	d.objs = o
	select {
	case <-d.synced:
	default:
		if err == nil {
			close(d.synced)
		}
	}
	c := o.current()
	d.entries = map[string]int{"policy_entries": c.policyEntries(), "ipcache_entries": len(c.ipcache.m),
		"endpoints": len(c.endpoints), "service_frontends": len(c.services), "service_backends": len(c.backends)}
	return err
}

// loadFirst loads the programs and maps (adopting what a previous process pinned, with PinDir)
// and writes the threat engine's responses into them. The caller holds d.mu.
func (d *Dataplane) loadFirst() (*Objects, error) {
	var o *Objects
	var err error
	if d.PinDir != "" {
		o, err = d.loadAdopting()
	} else {
		o, err = load(nil, d.genOptions())
	}
	if err != nil {
		return nil, err
	}
	o.gen = d.gen
	d.blockHave, d.blockSynced = nil, false // a new or adopted map: read what it holds
	if err := errors.Join(d.writeBlocklistLocked(o.objs.Blocklist), d.writeSynLimitsLocked(o.objs.SynLimits), d.writeQuarantineLocked(o), d.writeShieldsLocked(o), d.writeConnLimitsLocked(o)); err != nil {
		d.blockHave, d.blockSynced = nil, false
		o.Close()
		return nil, err
	}
	return o, nil
}

// generationInForce records that generation gen, built from tables of rs, is in force: its
// flow events resolve with its rule table. The caller holds d.mu.
func (d *Dataplane) generationInForce(gen uint32, tables *Tables, rs *ir.Ruleset) {
	prev := d.gens[d.gen].resolver // nil at the first generation
	d.gen = gen
	d.gens[gen] = generation{rules: tables.Rules, resolver: flow.NewResolverFrom(prev, rs)}
	delete(d.gens, gen-keptGenerations)
}

// Capacities reports the most entries each kind's map holds (dataplane.CapacityReporter); nil
// before the first Sync.
func (d *Dataplane) Capacities() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil
	}
	return d.objs.Capacities()
}

// Entries reports the map entries the last Sync wrote (dataplane.EntryCounter).
func (d *Dataplane) Entries() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.entries
}

// generation is what resolves the flow events of one generation of tables.
type generation struct {
	rules    *flow.RuleTable
	resolver *flow.Resolver // of the Ruleset it enforced: the pods a denial isolated
}

// keptGenerations is how many generations' rule tables resolve flow events.
const keptGenerations = 4

// genOptions are the programs' load-time constants. The caller holds d.mu.
func (d *Dataplane) genOptions() genOptions {
	return genOptions{noFlows: d.NoFlowEvents, sizes: d.MapSizes}
}

// attach creates the links of local pods that have none (or points them at programs loaded
// afresh) and removes those of pods that left.
func (d *Dataplane) attach(rs *ir.Ruleset, tables *Tables, ifaces map[ir.PodID]Interface, o *Objects, fresh bool) error {
	want := map[string]int{}
	for id := range tables.Endpoints {
		name, _ := d.node.Interface(&rs.Pods[id])
		want[name] = int(ifaces[id].Index)
	}
	var errs []error
	for name, idx := range want {
		if a, ok := d.links[name]; ok {
			if fresh {
				errs = append(errs, a.Update(o.objs.FromPod, o.objs.ToPod))
			}
			continue
		}
		if a := d.takeGuard(name); a != nil {
			// From deny to policy in one operation per hook: the pod never passes unjudged.
			if err := a.Update(o.objs.FromPod, o.objs.ToPod); err == nil {
				if d.PinDir != "" {
					errs = append(errs, a.Pin(d.linkPin(name)))
				}
				d.links[name] = a
				continue
			}
			a.Detach()
		}
		if a := d.adoptLink(name); a != nil {
			if err := a.Update(o.objs.FromPod, o.objs.ToPod); err == nil {
				d.links[name] = a
				continue
			}
			a.Detach() // its interface is gone (a pod recreated under the same name)
		}
		a, err := attach(d.Attach, idx, o.objs.FromPod, o.objs.ToPod)
		if err != nil {
			errs = append(errs, fmt.Errorf("attach to %s: %w", name, err))
			continue
		}
		if d.PinDir != "" {
			if err := a.Pin(d.linkPin(name)); err != nil {
				errs = append(errs, err)
			}
		}
		d.links[name] = a
	}
	for name, a := range d.links {
		if _, ok := want[name]; !ok {
			a.Detach()
			delete(d.links, name)
		}
	}
	errs = append(errs, d.dropStalePins(want), d.dropGoneGuards())
	return errors.Join(errs...)
}

// Counters reads the programs' packet counters (CounterNames), kept across generations.
func (d *Dataplane) Counters() (map[string]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, errors.New("not synced")
	}
	return d.objs.Counters()
}

// Close releases the programs and maps. Without PinDir the programs are detached; with it they
// stay in force (Remove takes them away).
func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shutdown(d.PinDir == "")
}

// shutdown lets go of every attachment (detaching it, or leaving a pinned one in force) and of
// the maps. The caller holds d.mu.
func (d *Dataplane) shutdown(detach bool) error {
	var errs []error
	all := func() error {
		for name, a := range d.links {
			if detach {
				errs = append(errs, a.Detach())
			} else {
				errs = append(errs, a.Release())
			}
			delete(d.links, name)
		}
		for name, a := range d.guards {
			errs = append(errs, a.Detach()) // a guard is never left behind: the next agent guards anew
			delete(d.guards, name)
		}
		errs = append(errs, d.removeHost(detach))
		return nil
	}
	// clsact filters are removed through netlink in the node's namespace; TCX links are file
	// descriptors and close anywhere (also once the namespace is gone).
	if err := d.inNetns(all); err != nil {
		all()
	}
	if d.objs != nil {
		errs = append(errs, d.objs.Close())
		d.objs = nil
	}
	if d.deny != nil {
		errs = append(errs, d.deny.Close())
		d.deny = nil
	}
	return errors.Join(errs...)
}

// inNetns runs fn in the dataplane's namespace: interface indexes and TCX attachments are
// resolved in the caller's network namespace.
func (d *Dataplane) inNetns(fn func() error) error { return nsexec.Do(d.netns, fn) }
