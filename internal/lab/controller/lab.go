package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/dataplane/ctsweep"
	"github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/dataplane/iptables"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/lab/cgroup"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Lab is a running lab: the cluster's objects, the fabric that realises them, and one
// dataplane per node. Every change goes through Change, which validates and compiles the new
// state before touching the kernel, and keeps the old state when anything fails.
type Lab struct {
	mu       sync.Mutex
	settings Settings
	cluster  *model.Cluster
	rs       *ir.Ruleset
	fabric   Fabric
	planes   map[string]dataplane.Dataplane // by node name

	// With eBPF, Services are balanced at connect time for the pods' (and nodes') sockets.
	sock      *ebpf.SockLB
	cg        *cgroup.Group // the lab's, parent of its pods' groups
	releaseCG func() error
	sockErr   error // why connect-time balancing is off, if it is
}

// New returns a lab over fabric; Reconcile brings it up.
func New(s Settings, c *model.Cluster, f Fabric) *Lab {
	return &Lab{settings: s, cluster: c, fabric: f, planes: map[string]dataplane.Dataplane{}}
}

// Reconcile realises the current objects: placement, fabric, dataplanes.
func (l *Lab) Reconcile(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.realise(ctx, l.cluster)
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
		// Put the kernel back to the previous objects; the error says what failed.
		return errors.Join(err, l.realise(ctx, l.cluster))
	}
	return nil
}

func (l *Lab) realise(ctx context.Context, c *model.Cluster) error {
	if err := Place(c, l.settings.Nodes); err != nil {
		return err
	}
	rs, err := compile.Compile(c)
	if err != nil {
		return err
	}
	topo := topologyOf(c, rs)
	topo.DataplaneRoutesServices = l.settings.Dataplane == "ebpf"
	if err := l.fabric.Ensure(ctx, topo); err != nil {
		return fmt.Errorf("lab network: %w", err)
	}
	ev := policy.New(rs)
	for _, n := range topo.Nodes {
		dp, err := l.plane(n.Name)
		if err != nil {
			return err
		}
		if dp == nil {
			continue
		}
		if err := dp.Sync(ctx, rs); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		// Connections the new policy denies are cut: flows tracked by the dataplane itself
		// (eBPF), or by the kernel's conntrack (iptables).
		if s, ok := dp.(interface {
			Sweep(*policy.Evaluator) (int, error)
		}); ok {
			if _, err := s.Sweep(ev); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		} else if _, err := ctsweep.Sweep(l.fabric.NodeNetns(n.Name), ev); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if err := l.syncSockLB(rs); err != nil {
		return err
	}
	l.cluster, l.rs = c, rs
	return SaveState(l.settings, c)
}

// syncSockLB brings the connect-time load balancer to rs's Services. On first use the lab gets
// a threaded cgroup below the process's, the programs are attached there, and the fabric gives
// every pod a cgroup below it in which the pod's probes run. Where the host offers no cgroup2
// hierarchy, Services stay balanced per packet by the veth programs, and the lab says so once.
func (l *Lab) syncSockLB(rs *ir.Ruleset) error {
	if l.settings.Dataplane != "ebpf" || l.sockErr != nil {
		return nil
	}
	if l.sock == nil {
		if err := l.startSockLB(); err != nil {
			l.sockErr = err
			fmt.Fprintf(os.Stderr, "warning: connect-time Service load balancing is off (%v); Services are translated per packet\n", err)
			return nil
		}
	}
	if err := l.sock.Sync(rs); err != nil {
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
		if l.sock, err = ebpf.NewSockLB(cg.Path); err == nil {
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

// SockLB returns the connect-time load balancer, nil when the lab has none.
func (l *Lab) SockLB() *ebpf.SockLB {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sock
}

// plane returns the dataplane of a node, creating it on first use (nil for "none").
func (l *Lab) plane(node string) (dataplane.Dataplane, error) {
	if dp, ok := l.planes[node]; ok {
		return dp, nil
	}
	dn := dataplane.Node{Name: node, Interface: func(p *ir.Pod) (string, bool) {
		if p.Node != node || p.HostNetwork {
			return "", false
		}
		return l.fabric.PodInterface(p.Namespace, p.Name), true
	}}
	var dp dataplane.Dataplane
	switch l.settings.Dataplane {
	case "iptables":
		dp = iptables.New(dn, iptables.NetnsRunner{Netns: l.fabric.NodeNetns(node)})
	case "ebpf":
		dn.Uplink = "eth0" // the node's link to the fabric bridge
		dp = ebpf.New(dn, l.fabric.NodeNetns(node))
	case "none":
	default:
		return nil, fmt.Errorf("dataplane %q is not available", l.settings.Dataplane)
	}
	l.planes[node] = dp
	return dp, nil
}

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
	return t
}

// Teardown removes the lab's dataplanes and fabric.
func (l *Lab) Teardown() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Deleting the namespaces removes rules, sets and programs with them; the socket hooks are
	// links of this process, closed here, and the cgroups go once the fabric's threads left.
	var errs []error
	if l.sock != nil {
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
