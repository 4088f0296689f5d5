// Package fabric builds a lab's network out of network namespaces: one per node (its "host"),
// one per pod joined to its node by a veth pair and routed (no bridge), and a fabric namespace
// whose bridge joins the nodes, so that cross-node pod traffic is routed through both nodes.
// It serves every declared port of every pod from inside the pod's namespace, all in this one
// process, and probes connectivity from pods' namespaces and from an external client: a
// namespace on the fabric bridge with an address outside the cluster, which routes the
// Services' external and load-balancer addresses to nodes. Nothing is created in the root
// network namespace; every namespace name starts with the lab's prefix.
package fabric

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/rampart-sec/rampart/internal/lab/cgroup"
	"github.com/rampart-sec/rampart/internal/lab/controller"
)

// gateway is the link-local next hop pods route through; every pod reaches it through a
// static neighbour entry pointing at its node-side veth, as Calico does.
var gateway = net.IPv4(169, 254, 1, 1)

// Fabric implements controller.Fabric.
type Fabric struct {
	prefix string
	mu     sync.Mutex
	built  bool
	nodes  map[string]controller.TopoNode
	pods   map[string]*pod
	// With UseCgroups: the lab's group (parent of the pods'), and where probe threads return.
	cgLab, cgHome *cgroup.Group
	// extRoutes are the external client's routes in place, by destination.
	extRoutes map[netip.Addr]netip.Addr
}

type pod struct {
	spec    controller.TopoPod
	netns   string // the pod's own namespace, or its node's for host-network pods
	servers *servers
	cg      *cgroup.Group // nil without UseCgroups
}

var _ controller.Fabric = (*Fabric)(nil)

// Prefix returns the prefix of every namespace of the named lab. Lab names never hold '_', so
// no lab's prefix is a prefix of another's (lab "a" and lab "a-b" share no namespace).
func Prefix(lab string) string { return "rl-" + lab + "_" }

// New returns the fabric of the named lab. Nothing is created until Ensure.
func New(lab string) *Fabric {
	return &Fabric{prefix: Prefix(lab), nodes: map[string]controller.TopoNode{}, pods: map[string]*pod{}}
}

func (f *Fabric) fabricNetns() string { return f.prefix + "fabric" }

// ExternalNetns names the external client's namespace.
func (f *Fabric) ExternalNetns() string { return f.prefix + "external" }

// NodeNetns names a node's namespace ("" for a node the fabric has not built).
func (f *Fabric) NodeNetns(node string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodeNetnsLocked(node)
}

// nodeNetnsLocked is NodeNetns for callers holding f.mu.
func (f *Fabric) nodeNetnsLocked(node string) string {
	if n, ok := f.nodes[node]; ok {
		return f.nodeNetnsName(n)
	}
	return ""
}

func (f *Fabric) nodeNetnsName(n controller.TopoNode) string {
	return fmt.Sprintf("%sn%d", f.prefix, n.Index)
}

func (f *Fabric) podNetns(ns, name string) string { return f.prefix + ns + "_" + name }

// PodInterface names the node-side end of a pod's veth: short (IFNAMSIZ is 16) and stable.
func (f *Fabric) PodInterface(ns, name string) string {
	h := sha256.Sum256([]byte(ns + "/" + name))
	return "v" + hex.EncodeToString(h[:])[:10]
}

// Ensure builds what is missing and removes what is gone.
func (f *Fabric) Ensure(ctx context.Context, topo controller.Topology) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.built {
		if err := addNetns(f.fabricNetns(), false); err != nil {
			return err
		}
		if err := f.bridge(); err != nil {
			return err
		}
		if err := f.external(); err != nil {
			return fmt.Errorf("external client: %w", err)
		}
		f.built = true
	}
	for _, n := range topo.Nodes {
		if _, ok := f.nodes[n.Name]; !ok {
			if err := f.addNode(n); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
	}
	want := map[string]controller.TopoPod{}
	for _, p := range topo.Pods {
		if p.IP.IsValid() {
			want[p.Namespace+"/"+p.Name] = p
		}
	}
	var errs []error
	for key, p := range f.pods {
		if w, ok := want[key]; !ok || !samePod(w, p.spec) {
			errs = append(errs, f.removePod(key))
		}
	}
	for key, p := range want {
		if _, ok := f.pods[key]; !ok {
			if err := f.addPod(p); err != nil {
				errs = append(errs, fmt.Errorf("pod %s: %w", key, err))
			}
		}
	}
	errs = append(errs, f.routes(topo), f.externalRoutes(topo.External))
	return errors.Join(errs...)
}

func samePod(a, b controller.TopoPod) bool {
	if a.Node != b.Node || a.IP != b.IP || a.HostNetwork != b.HostNetwork || len(a.Ports) != len(b.Ports) {
		return false
	}
	for i := range a.Ports {
		if a.Ports[i] != b.Ports[i] {
			return false
		}
	}
	return true
}

func (f *Fabric) bridge() error {
	h, err := handle(f.fabricNetns())
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	return h.LinkSetUp(br)
}

// external creates the external client: a namespace with ExternalClient on a link to the
// fabric bridge, as a machine on the nodes' network outside the cluster.
func (f *Fabric) external() error {
	name := f.ExternalNetns()
	if err := addNetns(name, false); err != nil {
		return err
	}
	f.extRoutes = map[netip.Addr]netip.Addr{}
	return f.uplink(name, "ext", controller.ExternalClient)
}

// externalRoutes makes the external client's routes those of want.
func (f *Fabric) externalRoutes(want []controller.ExternalRoute) error {
	h, err := handle(f.ExternalNetns())
	if err != nil {
		return err
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	var errs []error
	keep := map[netip.Addr]bool{}
	for _, r := range want {
		keep[r.Dst] = true
		if f.extRoutes[r.Dst] == r.Via {
			continue
		}
		rt := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(r.Dst, 32)), Gw: r.Via.AsSlice()}
		if err := h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("external client: route %s via %s: %w", r.Dst, r.Via, err))
			continue
		}
		f.extRoutes[r.Dst] = r.Via
	}
	for dst := range f.extRoutes {
		if !keep[dst] {
			rt := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(dst, 32))}
			if err := h.RouteDel(rt); err != nil {
				errs = append(errs, fmt.Errorf("external client: remove route %s: %w", dst, err))
				continue
			}
			delete(f.extRoutes, dst)
		}
	}
	return errors.Join(errs...)
}

// addNode creates the node namespace and plugs it into the fabric bridge with the node's IP.
// The node is recorded only once it is complete; a failure removes what was made, so the next
// Ensure tries again from scratch.
func (f *Fabric) addNode(n controller.TopoNode) error {
	nsName := f.nodeNetnsName(n)
	if err := f.buildNode(n, nsName); err != nil {
		return errors.Join(err, delNetns(nsName))
	}
	f.nodes[n.Name] = n
	return nil
}

func (f *Fabric) buildNode(n controller.TopoNode, nsName string) error {
	if err := addNetns(nsName, true); err != nil {
		return err
	}
	return f.uplink(nsName, fmt.Sprintf("n%d", n.Index), n.IP)
}

// uplink joins a namespace to the fabric bridge: its eth0 with addr, the bridge's port named
// port.
func (f *Fabric) uplink(nsName, port string, ip netip.Addr) error {
	fab, err := netns.GetFromName(f.fabricNetns())
	if err != nil {
		return err
	}
	defer fab.Close()
	h, err := handle(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: port, PeerNamespace: netlink.NsFd(fab)}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add link to the fabric: %w", err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(controller.FabricPrefix.Bits(), 32)}}
	if err := h.AddrAdd(eth0, addr); err != nil {
		return err
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return err
	}
	fh, err := handle(f.fabricNetns())
	if err != nil {
		return err
	}
	defer fh.Close()
	p, err := fh.LinkByName(port)
	if err != nil {
		return err
	}
	br, err := fh.LinkByName("br0")
	if err != nil {
		return err
	}
	if err := fh.LinkSetMaster(p, br); err != nil {
		return err
	}
	return fh.LinkSetUp(p)
}

// routes makes every node route the other nodes' pod CIDRs (and any pod address outside its
// node's CIDR) to that node, and, unless the dataplane does, the Service range out of its
// fabric link so that traffic from the node itself reaches the NAT rules.
func (f *Fabric) routes(topo controller.Topology) error {
	var errs []error
	for _, n := range topo.Nodes {
		h, err := handle(f.nodeNetnsLocked(n.Name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			h.Close()
			errs = append(errs, err)
			continue
		}
		add := func(dst netip.Prefix, via netip.Addr) {
			r := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: prefixNet(dst)}
			if via.IsValid() {
				r.Gw = via.AsSlice()
			} else {
				r.Scope = netlink.SCOPE_LINK
			}
			if err := h.RouteReplace(r); err != nil {
				errs = append(errs, fmt.Errorf("node %s: route %s: %w", n.Name, dst, err))
			}
		}
		if !topo.DataplaneRoutesServices {
			add(controller.ServiceCIDR, netip.Addr{})
			// External and load-balancer addresses too: traffic for one that no rule
			// translates (no endpoints) is then forwarded, through the filter table's FORWARD
			// chain, where the iptables dataplane refuses it as kube-proxy does.
			for _, e := range topo.External {
				add(netip.PrefixFrom(e.Dst, 32), netip.Addr{})
			}
		}
		for _, o := range topo.Nodes {
			if o.Name != n.Name && o.PodCIDR.IsValid() {
				add(o.PodCIDR, o.IP)
			}
		}
		for _, p := range topo.Pods {
			owner := f.nodes[p.Node]
			if p.Node == n.Name || p.HostNetwork || !p.IP.IsValid() || owner.PodCIDR.Contains(p.IP) {
				continue
			}
			add(netip.PrefixFrom(p.IP, 32), owner.IP)
		}
		h.Close()
	}
	return errors.Join(errs...)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addPod creates the pod's namespace and veth, routes it, and starts its servers.
func (f *Fabric) addPod(spec controller.TopoPod) error {
	key := spec.Namespace + "/" + spec.Name
	node, ok := f.nodes[spec.Node]
	if !ok {
		return fmt.Errorf("unknown node %q", spec.Node)
	}
	p := &pod{spec: spec, netns: f.nodeNetnsLocked(node.Name)}
	if !spec.HostNetwork {
		p.netns = f.podNetns(spec.Namespace, spec.Name)
		if err := f.plumbPod(p, node); err != nil {
			_ = delNetns(p.netns)
			return err
		}
	}
	srv, err := startServers(p.netns, key, spec.Ports)
	if err != nil {
		if !spec.HostNetwork {
			_ = delNetns(p.netns)
		}
		return err
	}
	p.servers = srv
	if f.cgLab != nil {
		if p.cg, err = podGroup(f.cgLab, spec); err != nil {
			f.pods[key] = p // the namespace is up: let removePod take it down
			return err
		}
	}
	f.pods[key] = p
	return nil
}

// UseCgroups gives every pod a threaded cgroup below lab; probes run in it.
func (f *Fabric) UseCgroups(lab, home *cgroup.Group) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cgLab, f.cgHome = lab, home
	var errs []error
	for _, p := range f.pods {
		if p.cg != nil {
			continue
		}
		g, err := podGroup(lab, p.spec)
		p.cg = g
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// podGroup creates a pod's cgroup below the lab's.
func podGroup(lab *cgroup.Group, spec controller.TopoPod) (*cgroup.Group, error) {
	return cgroup.NewThreaded(lab.Path, spec.Namespace+"_"+spec.Name)
}

// inPod runs fn in a pod's network namespace and, with cgroups, on a thread inside the pod's
// group: a socket belongs to the cgroup of the thread that creates it.
func (f *Fabric) inPod(p *pod, fn func() error) error {
	if p.cg == nil {
		return inNetns(p.netns, fn)
	}
	home := f.cgHome
	return inNetns(p.netns, func() error {
		if err := p.cg.Enter(); err != nil {
			return fmt.Errorf("enter the pod's cgroup: %w", err)
		}
		ferr := fn()
		if err := home.Enter(); err != nil {
			runtime.LockOSThread() // never unlocked: the runtime ends the thread rather than reuse it
		}
		return ferr
	})
}

func (f *Fabric) plumbPod(p *pod, node controller.TopoNode) error {
	if err := addNetns(p.netns, false); err != nil {
		return err
	}
	podNs, err := netns.GetFromName(p.netns)
	if err != nil {
		return err
	}
	defer podNs.Close()
	nh, err := handle(f.nodeNetnsLocked(node.Name))
	if err != nil {
		return err
	}
	defer nh.Close()
	hostIf := f.PodInterface(p.spec.Namespace, p.spec.Name)
	if err := nh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(podNs)}); err != nil {
		return fmt.Errorf("add veth %s: %w", hostIf, err)
	}
	host, err := nh.LinkByName(hostIf)
	if err != nil {
		return err
	}
	if err := nh.LinkSetUp(host); err != nil {
		return err
	}
	if err := nh.RouteReplace(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(p.spec.IP, 32)), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route to pod: %w", err)
	}
	ph, err := netlink.NewHandleAt(podNs)
	if err != nil {
		return err
	}
	defer ph.Close()
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := ph.AddrAdd(eth0, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(p.spec.IP, 32))}); err != nil {
		return err
	}
	if err := ph.LinkSetUp(eth0); err != nil {
		return err
	}
	if err := ph.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, State: netlink.NUD_PERMANENT, IP: gateway, HardwareAddr: host.Attrs().HardwareAddr, Family: netlink.FAMILY_V4}); err != nil {
		return fmt.Errorf("gateway neighbour: %w", err)
	}
	if err := ph.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: gateway, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		return err
	}
	return ph.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gateway})
}

func (f *Fabric) removePod(key string) error {
	p := f.pods[key]
	delete(f.pods, key)
	p.servers.close()
	if p.cg != nil {
		// Busy only while a probe of the pod is still running; the lab's teardown removes
		// whatever is left.
		_ = p.cg.Remove()
	}
	if p.spec.HostNetwork {
		return nil
	}
	return delNetns(p.netns) // removes the veth pair with it
}

// Exec runs a command in a pod's namespace.
func (f *Fabric) Exec(ctx context.Context, ns, name string, argv []string) ([]byte, error) {
	f.mu.Lock()
	p, ok := f.pods[ns+"/"+name]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no pod %s/%s", ns, name)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command")
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.netns}, argv...)...).CombinedOutput()
}

// Teardown stops every server and deletes every namespace of the lab.
func (f *Fabric) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.pods {
		p.servers.close()
	}
	f.pods = map[string]*pod{}
	f.nodes = map[string]controller.TopoNode{}
	f.built = false
	f.cgLab, f.cgHome = nil, nil // the controller removes the groups
	return TeardownPrefix(f.prefix)
}

// TeardownPrefix deletes every namespace whose name starts with prefix; it is how `lab down`
// cleans up after a daemon that crashed.
func TeardownPrefix(prefix string) error {
	names, err := listNetns(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, delNetns(n))
	}
	return errors.Join(errs...)
}
