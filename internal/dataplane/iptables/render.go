package iptables

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
)

// Chain and set name prefixes. Everything rampart creates starts with these, which is how
// Apply finds what it owns after a restart (mark and sweep).
const (
	ChainPrefix = "RAMPART-"
	SetPrefix   = "rampart-"
)

// Mark bits through which policy chains report a verdict to the pod chain that called them.
// They sit above the bits kube-proxy (0x4000, 0x8000) and Calico (0xffff0000 is configurable
// there) use by default.
const (
	markAllow = 0x01000000
	markDeny  = 0x02000000
	markPass  = 0x04000000
	markMask  = 0x07000000
	// markMasq asks POSTROUTING to masquerade (a pod reaching itself through a Service).
	markMasq = 0x08000000
	// markFront holds the id of the Service frontend the NAT translated a connection's first
	// packet for (Spec.Frontends): NFLOG reports the packet's mark, so a flow event, denied ones
	// included, names the Service the client addressed (the kernel logs no conntrack entry).
	markFront = 0x00ffffff
)

var actionMark = map[ir.Action]uint32{ir.Allow: markAllow, ir.Deny: markDeny, ir.Pass: markPass}

// Render computes the spec that makes node enforce rs. It is pure and deterministic.
func Render(rs *ir.Ruleset, node dataplane.Node) (*Spec, error) {
	r := &renderer{rs: rs, node: node, spec: &Spec{Tables: map[string][]Chain{}}, usedSets: map[string]bool{}, units: map[string]*unit{}}
	if err := r.filter(); err != nil {
		return nil, err
	}
	if !node.KubeProxy {
		r.nat()
	}
	r.sets()
	return r.spec, nil
}

type renderer struct {
	rs       *ir.Ruleset
	node     dataplane.Node
	spec     *Spec
	usedSets map[string]bool  // ipset names referenced by rules
	units    map[string]*unit // policy key or block chain -> unit, rendered once per node
	fronts   []ir.Frontend    // the node's Service frontends (frontends), listed once
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return strings.ToUpper(hex.EncodeToString(h[:]))[:10]
}

func (r *renderer) addChain(table string, c Chain) {
	r.spec.Tables[table] = append(r.spec.Tables[table], c)
}

// filter renders policy enforcement: dispatch chains hooked into FORWARD (pod to pod, and pod
// to other nodes), INPUT (pod to this node) and OUTPUT (this node to pod), per-pod tier chains,
// and per-policy chains.
func (r *renderer) filter() error {
	pickupIn, pickupOut := midstreamRule("-i", r.node.PodInterfacePrefix), midstreamRule("-o", r.node.PodInterfacePrefix)
	fwd := Chain{Name: ChainPrefix + "FORWARD", Rules: []string{establishedRule, pickupIn, pickupOut}}
	in := Chain{Name: ChainPrefix + "INPUT", Rules: []string{establishedRule, pickupIn}}
	out := Chain{Name: ChainPrefix + "OUTPUT", Rules: []string{establishedRule, pickupOut}}
	if rej, ok := r.noEndpoints(); ok {
		// Before policy, as kube-proxy's KUBE-SERVICES jump is: a Service port without
		// endpoints refuses connections rather than letting them time out.
		fwd.Rules = append(fwd.Rules[:1:1], append([]string{"-j " + rej}, fwd.Rules[1:]...)...)
		out.Rules = append(out.Rules[:1:1], append([]string{"-j " + rej}, out.Rules[1:]...)...)
	}
	if drop, ok := r.externalDrops(); ok {
		fwd.Rules = append(fwd.Rules[:1:1], append([]string{"-j " + drop}, fwd.Rules[1:]...)...)
		in.Rules = append(in.Rules[:1:1], append([]string{"-j " + drop}, in.Rules[1:]...)...)
	}
	var known []string // the local pods' interfaces, for the guard
	// In FORWARD every pod's egress comes before any pod's ingress: a packet between two local
	// pods is judged on its way out of the source first (as the eBPF dataplane does), so the
	// side a flow record names is the same on both dataplanes.
	var fwdIngress []string
	for i := range r.rs.Pods {
		pod := &r.rs.Pods[i]
		ifname, ok := r.node.Interface(pod)
		if !ok || pod.HostNetwork {
			continue
		}
		known = append(known, ifname)
		if chain, ok := r.podChain(pod, ir.Egress); ok {
			rule := fmt.Sprintf("-i %s -j %s", ifname, chain)
			fwd.Rules = append(fwd.Rules, rule)
			in.Rules = append(in.Rules, rule)
		} else if log := r.nflog(defaultPrefix(ir.Egress)); log != "" {
			rule := fmt.Sprintf("-i %s %s", ifname, log)
			fwd.Rules = append(fwd.Rules, rule)
			in.Rules = append(in.Rules, rule)
		}
		if chain, ok := r.podChain(pod, ir.Ingress); !ok {
			if log := r.nflog(defaultPrefix(ir.Ingress)); log != "" {
				fwdIngress = append(fwdIngress, fmt.Sprintf("-o %s %s", ifname, log))
				for _, ip := range pod.IPs {
					if ip.Is4() {
						out.Rules = append(out.Rules, fmt.Sprintf("-d %s/32 %s", ip, log))
					}
				}
			}
		} else {
			fwdIngress = append(fwdIngress, fmt.Sprintf("-o %s -j %s", ifname, chain))
			// Locally generated traffic is matched by destination, not output device: when NAT
			// in OUTPUT re-routes a packet (node -> ClusterIP -> local pod), the filter hook still
			// sees the device of the route taken before NAT.
			for _, ip := range pod.IPs {
				if ip.Is4() {
					out.Rules = append(out.Rules, fmt.Sprintf("-d %s/32 -j %s", ip, chain))
				}
			}
		}
	}
	fwd.Rules = append(fwd.Rules, fwdIngress...)
	if pfx := r.node.PodInterfacePrefix; pfx != "" {
		// Last in each dispatch chain (allowed packets return from the pod chains): a packet in
		// or out of a pod interface this spec does not know is a pod the agent has not
		// programmed yet, and is dropped until it has.
		gin, gout := Chain{Name: ChainPrefix + "GUARD-IN"}, Chain{Name: ChainPrefix + "GUARD-OUT"}
		for _, ifname := range known {
			gin.Rules = append(gin.Rules, fmt.Sprintf("-i %s -j RETURN", ifname))
			gout.Rules = append(gout.Rules, fmt.Sprintf("-o %s -j RETURN", ifname))
		}
		gin.Rules = append(gin.Rules, fmt.Sprintf("-i %s+ -m comment --comment %q -j DROP", pfx, "pod interface not programmed yet"))
		gout.Rules = append(gout.Rules, fmt.Sprintf("-o %s+ -m comment --comment %q -j DROP", pfx, "pod interface not programmed yet"))
		r.addChain("filter", gin)
		r.addChain("filter", gout)
		fwd.Rules = append(fwd.Rules, "-j "+gin.Name, "-j "+gout.Name)
		in.Rules = append(in.Rules, "-j "+gin.Name)
		out.Rules = append(out.Rules, "-j "+gout.Name)
	}
	r.addChain("filter", fwd)
	r.addChain("filter", in)
	r.addChain("filter", out)
	r.spec.Jumps = append(r.spec.Jumps, Jump{"filter", "FORWARD", fwd.Name}, Jump{"filter", "INPUT", in.Name}, Jump{"filter", "OUTPUT", out.Name})
	return nil
}

// Replies of allowed connections pass without another policy decision.
const establishedRule = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"

// midstreamRule drops TCP packets other than a SYN that conntrack has no entry for, on pod
// interfaces (dir -i or -o with the pod interface prefix; all interfaces without one). Such a
// packet belongs to a connection whose entry is gone, most often swept because policy now denies
// it; conntrack's loose pick-up would start a new entry oriented the way the packet goes, so a
// packet of the server side (its ACK or retransmission, allowed out) would make the denied
// client's packets look like replies and pass as ESTABLISHED. A connection must open with a SYN
// to be decided.
func midstreamRule(dir, prefix string) string {
	match := ""
	if prefix != "" {
		match = fmt.Sprintf("%s %s+ ", dir, prefix)
	}
	return match + `-p tcp -m tcp ! --syn -m conntrack --ctstate NEW -m comment --comment "no entry: not decided mid-stream" -j DROP`
}

// podChain renders the chain deciding one direction for a local pod, or reports false when no
// policy selects the pod in that direction (default allow: no chain, no dispatch rule).
func (r *renderer) podChain(pod *ir.Pod, dir ir.Direction) (string, bool) {
	refs := r.rs.PoliciesFor(pod.ID, dir)
	if len(refs) == 0 {
		return "", false
	}
	var admin, np, baseline []*ir.Policy
	for _, ref := range refs {
		p := r.rs.Policy(dir, ref)
		switch p.Tier {
		case ir.TierAdmin:
			admin = append(admin, p)
		case ir.TierNetworkPolicy:
			np = append(np, p)
		case ir.TierBaseline:
			baseline = append(baseline, p)
		}
	}
	d := "I"
	if dir == ir.Egress {
		d = "E"
	}
	id := hash(pod.Key())
	name := ChainPrefix + d + "-" + id
	// The second stage holds the NetworkPolicy and baseline tiers; ANP Pass jumps straight to it.
	stage2 := Chain{Name: ChainPrefix + d + "2-" + id}
	if len(np) > 0 {
		stage2.Rules = append(stage2.Rules, clearMark)
		for _, u := range r.calls(np) {
			stage2.Rules = append(stage2.Rules, u.call(), fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", markAllow, markMask))
		}
		if log := r.nflog(isolationPrefix(dir)); log != "" {
			stage2.Rules = append(stage2.Rules, log)
		}
		stage2.Rules = append(stage2.Rules, dropTarget(pod, dir, "isolated by NetworkPolicy"))
	} else {
		// Baseline policies in priority order; a Pass leaves the tier, for the default allow.
		log := r.nflog(defaultPrefix(dir))
		for _, u := range r.calls(baseline) {
			stage2.Rules = append(stage2.Rules, clearMark, u.call(),
				fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", markAllow, markMask),
				fmt.Sprintf("-m mark --mark %#x/%#x %s", markDeny, markMask, dropTarget(pod, dir, "baseline deny")))
			if u.pass {
				if log != "" {
					stage2.Rules = append(stage2.Rules, fmt.Sprintf("-m mark --mark %#x/%#x %s", markPass, markMask, log))
				}
				stage2.Rules = append(stage2.Rules, fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", markPass, markMask))
			}
		}
		// Allowed by default: no rule of any tier decided (the pod is an admin or baseline
		// policy's subject, so it has a chain, but none matched).
		if log != "" {
			stage2.Rules = append(stage2.Rules, log)
		}
	}
	if len(admin) == 0 {
		stage2.Name = name
		r.addChain("filter", stage2)
		return name, true
	}
	first := Chain{Name: name}
	for _, u := range r.calls(admin) {
		first.Rules = append(first.Rules, clearMark, u.call(),
			fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", markAllow, markMask),
			fmt.Sprintf("-m mark --mark %#x/%#x %s", markDeny, markMask, dropTarget(pod, dir, "admin deny")),
			fmt.Sprintf("-m mark --mark %#x/%#x -g %s", markPass, markMask, stage2.Name))
	}
	first.Rules = append(first.Rules, "-g "+stage2.Name)
	r.addChain("filter", first)
	r.addChain("filter", stage2)
	return name, true
}

// nflog is the target logging a flow event with prefix to the node's group ("" when flow
// events are off). 128 bytes of the packet cover its IP and transport headers.
func (r *renderer) nflog(prefix string) string {
	if r.node.FlowLogGroup == 0 {
		return ""
	}
	return fmt.Sprintf("-j NFLOG --nflog-group %d --nflog-prefix %q --nflog-size 128", r.node.FlowLogGroup, prefix)
}

func hasPass(p *ir.Policy) bool {
	for _, r := range p.Rules {
		if r.Action == ir.Pass {
			return true
		}
	}
	return false
}

var clearMark = fmt.Sprintf("-j MARK --set-xmark 0x0/%#x", markMask)

func dropTarget(pod *ir.Pod, dir ir.Direction, why string) string {
	return fmt.Sprintf("-m comment --comment %q -j DROP", fmt.Sprintf("%s %s: %s", pod.Key(), dir, why))
}

// unit is what a pod chain calls: one policy's chain, or a block calling several in order.
// A unit that can be guarded knows every peer address its rules name, and its call is skipped
// for a packet whose peer is none of them.
type unit struct {
	chain     string
	peerDir   string // src for ingress, dst for egress
	set       string // the guard: a hash:net set of prefixes ("" for an unguarded call)
	guardable bool   // every rule names its peers, none covers every address
	prefixes  []netip.Prefix
	rules     int
	pass      bool // a rule may Pass
}

func (u *unit) call() string {
	if u.set == "" {
		return "-j " + u.chain
	}
	return fmt.Sprintf("-m set --match-set %s %s -j %s", u.set, u.peerDir, u.chain)
}

// Guards: a policy of guardMin rules or more is called only for peers one of its rules names
// (one set lookup instead of one per rule, and two mark checks per rule). Runs of consecutive
// policies that can be guarded are called through a tree of blocks of up to guardFanout calls,
// each guarded by the union of its peers: a new connection from a peer that a long list of
// policies does not name costs one lookup, and one that a policy names costs a lookup per
// level. Calls keep their order, so the first matching rule still decides, and the rule a flow
// record names does not change.
const (
	guardMin    = 8
	guardFanout = 8
)

// calls returns the units that call ps in order, guarded where that saves work.
func (r *renderer) calls(ps []*ir.Policy) []*unit {
	var out, run []*unit
	flush := func() {
		out = append(out, r.tree(run)...)
		run = nil
	}
	for _, p := range ps {
		u := r.policyUnit(p)
		if !u.guardable {
			flush()
			out = append(out, u)
			continue
		}
		run = append(run, u)
	}
	flush()
	return out
}

// tree groups a run of guardable units into blocks until one is left, when the run is worth
// guarding.
func (r *renderer) tree(run []*unit) []*unit {
	rules := 0
	for _, u := range run {
		rules += u.rules
	}
	if len(run) < 2 || rules < guardMin {
		return run
	}
	for len(run) > 1 {
		var next []*unit
		for i := 0; i < len(run); i += guardFanout {
			chunk := run[i:min(i+guardFanout, len(run))]
			if len(chunk) == 1 {
				next = append(next, chunk[0])
				continue
			}
			next = append(next, r.block(chunk))
		}
		run = next
	}
	return run
}

// block renders a chain calling units in order, returning as soon as one has set a verdict
// mark, once per node for a given list.
func (r *renderer) block(units []*unit) *unit {
	var names strings.Builder
	for _, u := range units {
		names.WriteString(u.chain + "|")
	}
	h := hash(names.String())
	name := ChainPrefix + "B-" + h
	if u, ok := r.units[name]; ok {
		return u
	}
	b := &unit{chain: name, peerDir: units[0].peerDir, guardable: true}
	c := Chain{Name: name}
	for i, u := range units {
		c.Rules = append(c.Rules, u.call())
		if i < len(units)-1 {
			c.Rules = append(c.Rules, fmt.Sprintf("-m mark ! --mark 0x0/%#x -j RETURN", markMask))
		}
		b.prefixes = append(b.prefixes, u.prefixes...)
		b.rules += u.rules
		b.pass = b.pass || u.pass
	}
	b.prefixes = sortedPrefixes(b.prefixes)
	b.set = r.guardSet(SetPrefix+"B-"+h, b.prefixes)
	r.addChain("filter", c)
	r.units[name] = b
	return b
}

// policyUnit renders a policy's rules once per node and returns its unit. Each rule that
// matches sets its action's mark bit and returns, so the first matching rule decides.
func (r *renderer) policyUnit(p *ir.Policy) *unit {
	key := fmt.Sprintf("%s|%s|%s|%s", p.Tier, p.Namespace, p.Name, p.Direction)
	if u, ok := r.units[key]; ok {
		return u
	}
	u := &unit{chain: ChainPrefix + "P-" + hash(key), peerDir: "src", rules: len(p.Rules), pass: hasPass(p)}
	if p.Direction == ir.Egress {
		u.peerDir = "dst"
	}
	u.prefixes, u.guardable = peerPrefixes(r.rs, p)
	if u.guardable && len(p.Rules) >= guardMin {
		u.set = r.guardSet(SetPrefix+"G-"+hash(key), u.prefixes)
	}
	r.units[key] = u
	c := Chain{Name: u.chain, Rules: []string{fmt.Sprintf("-m comment --comment %q", p.Ref()+" "+p.Direction.String())}}
	for _, rule := range p.Rules {
		mark := actionMark[rule.Action]
		for _, m := range r.matches(p.Direction, &rule) {
			c.Rules = append(c.Rules, strings.TrimSpace(m+fmt.Sprintf(" -j MARK --set-xmark %#x/%#x", mark, markMask)))
		}
		// Allow and Deny decide: the flow event names this rule. Pass decides nothing yet.
		if log := r.nflog(rulePrefix(p, &rule)); log != "" && rule.Action != ir.Pass {
			c.Rules = append(c.Rules, fmt.Sprintf("-m mark --mark %#x/%#x %s", mark, markMask, log))
		}
		c.Rules = append(c.Rules, fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", mark, markMask))
	}
	r.addChain("filter", c)
	return u
}

// peerPrefixes lists every IPv4 peer prefix p's rules name (the rendered rules match IPv4
// only), or reports false when a rule names no peers or covers every address.
func peerPrefixes(rs *ir.Ruleset, p *ir.Policy) ([]netip.Prefix, bool) {
	var prefixes []netip.Prefix
	for i := range p.Rules {
		if p.Rules[i].AnyPeer {
			return nil, false
		}
		for _, peer := range p.Rules[i].Peers {
			for _, pfx := range rs.Sets[peer.Set].Prefixes() {
				if !pfx.Addr().Is4() {
					continue
				}
				if pfx.Bits() == 0 {
					return nil, false
				}
				prefixes = append(prefixes, pfx)
			}
		}
	}
	return sortedPrefixes(prefixes), true
}

func sortedPrefixes(prefixes []netip.Prefix) []netip.Prefix {
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(prefixes)
}

// guardSet adds a hash:net set of prefixes and returns its name.
func (r *renderer) guardSet(name string, prefixes []netip.Prefix) string {
	set := IPSet{Name: name, Type: "hash:net", Family: "inet", Entries: make([]string, 0, len(prefixes))}
	for _, pfx := range prefixes {
		set.Entries = append(set.Entries, pfx.String())
	}
	r.spec.Sets = append(r.spec.Sets, set)
	return name
}

// matches renders a rule's condition as alternative iptables matches: one per (peer, port)
// combination, since both peers and ports are ORed lists.
func (r *renderer) matches(dir ir.Direction, rule *ir.Rule) []string {
	peerDir := "src"
	if dir == ir.Egress {
		peerDir = "dst"
	}
	peers := []string{""}
	if !rule.AnyPeer {
		peers = nil
		for _, p := range rule.Peers {
			set := &r.rs.Sets[p.Set]
			peers = append(peers, fmt.Sprintf("-m set --match-set %s %s", r.addrSetName(set), peerDir))
		}
	}
	ports := []string{""}
	if !rule.Ports.All {
		ports = nil
		for _, pr := range rule.Ports.Ranges {
			proto := strings.ToLower(pr.Protocol.String())
			switch {
			case pr.First == 0 && pr.Last == 65535:
				ports = append(ports, "-p "+proto)
			case pr.First == pr.Last:
				ports = append(ports, fmt.Sprintf("-p %s -m %s --dport %d", proto, proto, pr.First))
			default:
				ports = append(ports, fmt.Sprintf("-p %s -m %s --dport %d:%d", proto, proto, pr.First, pr.Last))
			}
		}
		for _, n := range rule.Ports.Named {
			set := &r.rs.PortSets[n.Set]
			ports = append(ports, fmt.Sprintf("-m set --match-set %s dst,dst", r.portSetName(set)))
		}
	}
	var out []string
	for _, p := range peers {
		for _, q := range ports {
			out = append(out, strings.TrimSpace(p+" "+q))
		}
	}
	return out
}

func (r *renderer) addrSetName(s *ir.AddrSet) string {
	name := SetPrefix + s.Name
	r.usedSets[name] = true
	return name
}

func (r *renderer) portSetName(s *ir.PortSet) string {
	name := SetPrefix + s.Name
	r.usedSets[name] = true
	return name
}

// sets renders the members of every set a rule references.
func (r *renderer) sets() {
	for i := range r.rs.Sets {
		s := &r.rs.Sets[i]
		name := SetPrefix + s.Name
		if !r.usedSets[name] {
			continue
		}
		set := IPSet{Name: name, Type: "hash:ip", Family: "inet"}
		if len(s.Blocks) > 0 {
			set.Type = "hash:net"
		}
		for _, p := range s.Prefixes() {
			if !p.Addr().Is4() {
				continue // IPv4 only for now: pods and nodes in the lab are IPv4
			}
			switch {
			case set.Type == "hash:ip":
				set.Entries = append(set.Entries, p.Addr().String())
			case p.Bits() == 0: // hash:net takes prefixes of length 1 to 32 only
				set.Entries = append(set.Entries, "0.0.0.0/1", "128.0.0.0/1")
			default:
				set.Entries = append(set.Entries, p.String())
			}
		}
		r.spec.Sets = append(r.spec.Sets, set)
	}
	for i := range r.rs.PortSets {
		s := &r.rs.PortSets[i]
		name := SetPrefix + s.Name
		if !r.usedSets[name] {
			continue
		}
		set := IPSet{Name: name, Type: "hash:ip,port", Family: "inet"}
		set.Entries = make([]string, 0, len(s.Entries))
		var b []byte
		for _, e := range s.Entries {
			if e.IP.Is4() {
				// "10.0.0.1,tcp:80"; a named port's set holds every pod declaring it, so this
				// runs per pod and sync (without fmt).
				b = append(e.IP.AppendTo(b[:0]), ',')
				b = append(b, strings.ToLower(e.Protocol.String())...)
				b = strconv.AppendUint(append(b, ':'), uint64(e.Port), 10)
				set.Entries = append(set.Entries, string(b))
			}
		}
		r.spec.Sets = append(r.spec.Sets, set)
	}
}
