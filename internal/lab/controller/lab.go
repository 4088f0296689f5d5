package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampart-sec/rampart/internal/agent"
	nodeif "github.com/rampart-sec/rampart/internal/agent/node"
	"github.com/rampart-sec/rampart/internal/agent/runner"
	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/dataplane/backend"
	"github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/lab/cgroup"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/nsexec"
	"github.com/rampart-sec/rampart/internal/source/store"
)

// Lab is a running lab: the cluster's objects, the fabric that realises them, and one node
// agent per lab node (the same agent a real node runs) over the lab's store. Every change goes
// through Change, which validates and compiles the new state and builds its namespaces, then
// publishes it to the store and waits until every node's agent has it in force; when anything
// fails, the previous objects are published again and stay enforced.
type Lab struct {
	mu       sync.Mutex
	settings Settings
	cluster  *model.Cluster
	rs       *ir.Ruleset
	rsAt     time.Time // when rs came into force (live explanations: older records saw another state)
	fabric   Fabric
	store    *store.Store
	agents   map[string]*nodeAgent // by node name

	// kube is set in --kube labs: objects live in an API server, agents are processes.
	kube *kubeMode

	// The agents run until Teardown.
	agentCtx   context.Context
	stopAgents context.CancelFunc

	// With eBPF, Services are balanced at connect time for the pods' (and nodes') sockets.
	sock      *ebpf.SockLB
	sockRef   atomic.Pointer[ebpf.SockLB] // sock, for the nodes' flow records (other goroutines)
	cg        *cgroup.Group               // the lab's, parent of its pods' groups
	releaseCG func() error
	sockErr   error // why connect-time balancing is off, if it is
	// netnsCookies caches the nodes' namespace cookies, by namespace name.
	netnsCookies map[string]uint64
}

// nodeAgent is one node's agent and the goroutine running it.
type nodeAgent struct {
	*agent.Agent
	done chan struct{}
}

// New returns a lab over fabric; Reconcile brings it up.
func New(s Settings, c *model.Cluster, f Fabric) *Lab {
	ctx, cancel := context.WithCancel(context.Background())
	return &Lab{settings: s, cluster: c, fabric: f, agents: map[string]*nodeAgent{}, agentCtx: ctx, stopAgents: cancel, netnsCookies: map[string]uint64{}}
}

// Reconcile realises the current objects: placement, fabric, agents.
func (l *Lab) Reconcile(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.realise(ctx, l.cluster.Clone())
}

// Change applies fn to a copy of the cluster and realises the result; on any error the
// previous objects stay (and stay enforced).
func (l *Lab) Change(ctx context.Context, fn func(c *model.Cluster) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.cluster.Clone()
	if err := fn(next); err != nil {
		return err
	}
	if err := l.realise(ctx, next); err != nil {
		// Put the kernel back to the previous objects, even if the client has gone; the
		// error says what failed.
		return errors.Join(err, l.realise(context.WithoutCancel(ctx), l.cluster.Clone()))
	}
	return nil
}

// buildNetwork places c's pods, compiles it, and builds the namespaces it needs.
func (l *Lab) buildNetwork(ctx context.Context, c *model.Cluster) (*ir.Ruleset, Topology, error) {
	if err := Place(c, l.settings.Nodes); err != nil {
		return nil, Topology{}, err
	}
	rs, err := compile.Compile(c)
	if err != nil {
		return nil, Topology{}, err
	}
	topo := topologyOf(c, rs)
	topo.DataplaneRoutesServices = l.settings.Dataplane == string(dataplane.KindEBPF)
	if err := l.fabric.Ensure(ctx, topo); err != nil {
		return nil, Topology{}, fmt.Errorf("lab network: %w", err)
	}
	return rs, topo, nil
}

// realise makes c (which it owns) the lab's state.
func (l *Lab) realise(ctx context.Context, c *model.Cluster) error {
	rs, topo, err := l.buildNetwork(ctx, c)
	if err != nil {
		return err
	}
	var rev uint64
	if l.store == nil {
		l.store = store.New(c)
		_, rev = l.store.Snapshot()
	} else {
		rev = l.store.Publish(c)
	}
	for _, n := range topo.Nodes {
		if err := l.startAgent(n.Name); err != nil {
			return err
		}
	}
	var errs []error
	for _, n := range topo.Nodes {
		errs = append(errs, l.agents[n.Name].WaitApplied(ctx, rev))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := l.syncSockLB(rs); err != nil {
		return err
	}
	l.cluster, l.rs, l.rsAt = c, rs, time.Now()
	return SaveState(l.settings, c)
}

// startAgent runs the agent of a node, once: its dataplane works in the node's namespace on the
// pods the fabric placed there.
func (l *Lab) startAgent(node string) error {
	if _, ok := l.agents[node]; ok {
		return nil
	}
	kind, err := dataplane.ParseKind(l.settings.Dataplane)
	if err != nil || kind == dataplane.KindAuto {
		return fmt.Errorf("lab dataplane %q: want iptables, ebpf or none", l.settings.Dataplane)
	}
	dn := dataplane.Node{Name: node, Interface: func(p *ir.Pod) (string, bool) {
		if p.Node != node || p.HostNetwork {
			return "", false
		}
		return l.fabric.PodInterface(p.Namespace, p.Name), true
	}}
	dn.Uplink = "eth0" // the node's link to the fabric bridge
	dn.KubeProxy = l.settings.KubeProxy && kind == dataplane.KindIPTables
	dn.PodInterfacePrefix = PodInterfacePrefix
	// The lab's connect-time balancer serves every node's pods: their flow records ask it which
	// Service a connection addressed.
	frontend := func(client, server netip.AddrPort) (netip.AddrPort, bool) {
		if s := l.sockRef.Load(); s != nil {
			return s.Frontend(client, server)
		}
		return netip.AddrPort{}, false
	}
	dp, err := backend.New(kind, dn, dataplane.Options{Netns: l.fabric.NodeNetns(node), NoFlowEvents: l.settings.NoFlows, Frontend: frontend})
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		Node: node, Dataplane: kind, Logger: l.logger().With("node", node), PodInterfacePrefix: PodInterfacePrefix,
		// Changes are applied as they come: Change waits for them.
		Runner: runner.Config{MinInterval: 0, RetryMin: 50 * time.Millisecond, RetryMax: 2 * time.Second},
		Flows:  agent.FlowConfig{Off: l.settings.NoFlows, Aggregate: flow.Config{MaxConnections: l.settings.FlowMaxConnections}},
		// The lab's dataplanes translate Services (no kube-proxy): the agents answer their
		// health checks, on the node's address.
		ServiceHealth: serviceHealth(!dn.KubeProxy, l.fabric.NodeNetns(node)),
	}, l.store, dp)
	if err != nil {
		return err
	}
	// As on a real node, pod interfaces appearing are guarded at once and trigger a sync.
	ifaces, err := nodeif.Open(node, l.fabric.NodeNetns(node))
	if err != nil {
		return err
	}
	if err := ifaces.Watch(l.agentCtx, a.InterfaceChanged); err != nil {
		ifaces.Close()
		return err
	}
	na := &nodeAgent{Agent: a, done: make(chan struct{})}
	go func() {
		defer close(na.done)
		defer ifaces.Close()
		_ = a.Run(l.agentCtx) // a lab's dataplanes go with its namespaces
	}()
	l.agents[node] = na
	return nil
}

// logger is where the lab's daemon logs (Settings.Log, or nowhere).
func (l *Lab) logger() *slog.Logger {
	if l.settings.Log != nil {
		return l.settings.Log
	}
	return slog.New(slog.DiscardHandler)
}

// syncSockLB brings the connect-time load balancer to rs's Services. On first use the lab gets
// a threaded cgroup below the process's, the programs are attached there, and the fabric gives
// every pod a cgroup below it in which the pod's probes run. Where the host offers no cgroup2
// hierarchy, Services stay balanced per packet by the veth programs, and the lab says so once.
func (l *Lab) syncSockLB(rs *ir.Ruleset) error {
	if l.settings.Dataplane != string(dataplane.KindEBPF) || l.sockErr != nil {
		return nil
	}
	if l.sock == nil {
		if err := l.startSockLB(); err != nil {
			l.sockErr = err
			fmt.Fprintf(os.Stderr, "warning: connect-time Service load balancing is off (%v); Services are translated per packet\n", err)
			return nil
		}
		l.sockRef.Store(l.sock)
	}
	if err := l.sock.Sync(rs, ""); err != nil {
		return fmt.Errorf("connect-time load balancer: %w", err)
	}
	// The nodes' namespaces reach node ports on 127.0.0.1 (their host-network pods' sockets).
	var cookies []uint64
	for _, n := range rs.Nodes {
		netns := l.fabric.NodeNetns(n.Name)
		if netns == "" {
			continue
		}
		c, ok := l.netnsCookies[netns]
		if !ok {
			var err error
			if c, err = nsexec.NetnsCookie(netns); err != nil {
				return fmt.Errorf("connect-time load balancer: node %s: %w", n.Name, err)
			}
			l.netnsCookies[netns] = c
		}
		cookies = append(cookies, c)
	}
	if err := l.sock.SetHostNetns(cookies); err != nil {
		return fmt.Errorf("connect-time load balancer: %w", err)
	}
	return nil
}

func (l *Lab) startSockLB() error {
	home, release, err := cgroup.Acquire()
	if err != nil {
		return err
	}
	// Several labs may share the process (tests): each gets its own group, named after it.
	cg, err := cgroup.NewThreaded(home, "lab-"+l.settings.Name)
	if err == nil {
		if l.sock, err = ebpf.NewSockLB(cg.Path, nil); err == nil {
			if err = l.fabric.UseCgroups(cg, &cgroup.Group{Path: home}); err != nil {
				l.sock.Close()
				l.sock = nil
			}
		}
		if err != nil {
			cg.Remove()
		}
	}
	if err != nil {
		release()
		return err
	}
	l.cg, l.releaseCG = cg, release
	return nil
}

// serviceHealth is the agent's listener for Services' health checks, nil where kube-proxy
// answers them.
func serviceHealth(on bool, netns string) func(uint16) (net.Listener, error) {
	if !on {
		return nil
	}
	return agent.ListenIn(netns)
}

// SockLB returns the connect-time load balancer, nil when the lab has none.
func (l *Lab) SockLB() *ebpf.SockLB {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sock
}

// PodInterfacePrefix starts the node-side name of every lab pod's veth; the node namespaces
// hold no other interface with it (eth0, lo).
const PodInterfacePrefix = "v"

// TopologyOf is the fabric's view of a compiled cluster.
func TopologyOf(c *model.Cluster, rs *ir.Ruleset) Topology { return topologyOf(c, rs) }

func topologyOf(c *model.Cluster, rs *ir.Ruleset) Topology {
	var t Topology
	for i, n := range rs.Nodes {
		node := TopoNode{Name: n.Name, Index: i}
		if len(n.IPs) > 0 {
			node.IP = n.IPs[0]
		}
		if len(n.PodCIDRs) > 0 {
			node.PodCIDR = n.PodCIDRs[0]
		}
		t.Nodes = append(t.Nodes, node)
	}
	for _, p := range rs.Pods {
		tp := TopoPod{Namespace: p.Namespace, Name: p.Name, Node: p.Node, IP: p.IP(), HostNetwork: p.HostNetwork}
		for _, cp := range p.Ports {
			tp.Ports = append(tp.Ports, TopoPort{Name: cp.Name, Port: cp.Port, Protocol: cp.Protocol.String()})
		}
		t.Pods = append(t.Pods, tp)
	}
	t.External = externalRoutes(rs, t.Nodes)
	return t
}

// externalRoutes sends the external client's traffic for each external and load-balancer
// address to a node, as the network in front of a cluster does: with externalTrafficPolicy
// Local to the first node with a usable endpoint (a cloud's load balancer checks the
// health-check node port for that), otherwise to the first node.
func externalRoutes(rs *ir.Ruleset, nodes []TopoNode) []ExternalRoute {
	if len(nodes) == 0 {
		return nil
	}
	ips := map[string]netip.Addr{}
	for _, n := range nodes {
		ips[n.Name] = n.IP
	}
	var out []ExternalRoute
	seen := map[netip.Addr]bool{}
	for _, s := range rs.Services {
		via := nodes[0].IP
		if s.ExternalLocal {
			first := ""
			for _, sp := range s.Ports {
				for _, b := range ir.Usable(sp.Backends, nil) {
					if ip, ok := ips[b.Node]; ok && (first == "" || b.Node < first) {
						first, via = b.Node, ip
					}
				}
			}
		}
		for _, list := range [][]netip.Addr{s.ExternalIPs, s.LoadBalancerIPs} {
			for _, ip := range list {
				if ip.Is4() && via.IsValid() && !seen[ip] && !controllerOwned(ip, nodes) {
					seen[ip] = true
					out = append(out, ExternalRoute{Dst: ip, Via: via})
				}
			}
		}
	}
	return out
}

// controllerOwned: addresses of the fabric itself (a node's, the external client's) are never
// routed elsewhere.
func controllerOwned(ip netip.Addr, nodes []TopoNode) bool {
	if ip == ExternalClient {
		return true
	}
	for _, n := range nodes {
		if n.IP == ip {
			return true
		}
	}
	return false
}

// Teardown removes the lab's dataplanes and fabric.
func (l *Lab) Teardown() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Deleting the namespaces removes rules, sets and programs with them; the socket hooks are
	// links of this process, closed here, and the cgroups go once the fabric's threads left.
	var errs []error
	if l.kube != nil {
		errs = append(errs, l.kube.stop())
	}
	l.stopAgents()
	for _, na := range l.agents {
		<-na.done
	}
	if l.sock != nil {
		l.sockRef.Store(nil)
		errs = append(errs, l.sock.Close())
		l.sock = nil
	}
	errs = append(errs, l.fabric.Teardown())
	if l.cg != nil {
		errs = append(errs, l.cg.Remove())
		l.cg = nil
	}
	if l.releaseCG != nil {
		errs = append(errs, l.releaseCG())
		l.releaseCG = nil
	}
	return errors.Join(errs...)
}

// Snapshot returns the current objects and rules for reading.
func (l *Lab) Snapshot() (*model.Cluster, *ir.Ruleset) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cluster, l.rs
}

// Settings returns the lab's settings.
func (l *Lab) Settings() Settings { return l.settings }

// serviceTarget finds a ClusterIP address that reaches exactly pod on (port, proto): a Service
// port whose only backend is that pod's port. It reports false when there is none.
func serviceTarget(rs *ir.Ruleset, pod *ir.Pod, port uint16, proto ir.Protocol) (netip.AddrPort, bool) {
	for _, s := range rs.Services {
		if s.Namespace != pod.Namespace || len(s.ClusterIPs) == 0 {
			continue
		}
		for _, sp := range s.Ports {
			if sp.Protocol != proto || len(sp.Backends) != 1 {
				continue
			}
			if b := sp.Backends[0]; b.Pod == pod.ID && b.Port == port {
				return netip.AddrPortFrom(s.ClusterIPs[0], sp.Port), true
			}
		}
	}
	return netip.AddrPort{}, false
}

// sortedPods returns pods with addresses, by key.
func sortedPods(rs *ir.Ruleset) []*ir.Pod {
	var out []*ir.Pod
	for i := range rs.Pods {
		if len(rs.Pods[i].IPs) > 0 {
			out = append(out, &rs.Pods[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

func splitKey(key string) (string, string, error) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok || ns == "" || name == "" {
		return "", "", fmt.Errorf("%q: want namespace/name", key)
	}
	return ns, name, nil
}
