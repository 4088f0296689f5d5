package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Objects are the loaded programs and maps of one node. The tables of policy and Services are
// in two slots (bpf/policy.c): Write fills the slot not in force with the difference to what
// it held and then puts it in force, so the programs stay loaded from one policy to the next.
type Objects struct {
	objs policyObjects
	// gen is the generation in force (its tables are in slot gen&1); held[slot] is what a
	// slot's maps hold (nil: not known, after a failed write).
	gen  uint32
	held [2]*content
	// svcIDs numbers Service frontends, so that a frontend keeps its backends' keys.
	svcIDs numbering[policySvcKey]
	// node is the node's name, whose frontends (its addresses' node ports, its local
	// endpoints) the tables hold; "" for the frontends of no node in particular.
	node string
	// sizes are the maps' sizes where not bpf/policy.c's (a fresh slot gets them too).
	sizes MapSizes
}

// Load loads the programs and creates their maps (not pinned, not attached). Given the previous
// generation, its flow state (conntrack, reverse NAT, Service affinity and outside SNAT, the
// flow-event ring), counters, blocklist, SYN limits, quarantine, shields and connection limits
// are reused (carriedMaps), so flows survive new tables, counters keep counting and the threat
// engine's responses stay.
func Load(prev *Objects) (*Objects, error) { return load(prev, genOptions{}) }

// genOptions are the programs' load-time constants.
type genOptions struct {
	noFlows bool     // write no flow events
	sizes   MapSizes // maps' sizes other than bpf/policy.c's
}

// carriedMaps are the maps a generation takes over from the one before it (and, pinned, from
// a previous process: pinFlowState), by their names in bpf/policy.c.
var carriedMaps = []string{"conntrack", "revnat", "affinity", "nat_out", "nat_back", "counters", "flow_events",
	"blocklist", "syn_limits", "syn_buckets", "quarantine", "quarantine_allow", "shields", "conn_limits", "conn_counts"}

// carried maps a generation reuses, by name (carriedMaps); missing ones are created.
type carried map[string]*ebpf.Map

// carried returns the maps of o to carry.
func (o *Objects) carried() carried {
	c := carried{}
	for _, name := range carriedMaps {
		c[name] = o.mapNamed(name)
	}
	return c
}

// mapNamed returns the map the programs call name.
func (o *Objects) mapNamed(name string) *ebpf.Map {
	m := o.objs.policyMaps
	return map[string]*ebpf.Map{"conntrack": m.Conntrack, "revnat": m.Revnat, "affinity": m.Affinity, "nat_out": m.NatOut,
		"nat_back": m.NatBack, "counters": m.Counters, "flow_events": m.FlowEvents, "blocklist": m.Blocklist,
		"syn_limits": m.SynLimits, "syn_buckets": m.SynBuckets, "quarantine": m.Quarantine,
		"quarantine_allow": m.QuarantineAllow, "shields": m.Shields, "conn_limits": m.ConnLimits, "conn_counts": m.ConnCounts}[name]
}

func load(prev *Objects, g genOptions) (*Objects, error) {
	if prev != nil {
		return loadWith(prev.carried(), g)
	}
	return loadWith(nil, g)
}

// loadWith loads a generation using the given flow-state and counter maps.
func loadWith(c carried, g genOptions) (*Objects, error) {
	o := &Objects{sizes: g.sizes}
	spec, err := loadPolicy()
	if err != nil {
		return nil, err
	}
	g.sizes.apply(collSpec{spec})
	on := uint32(1)
	if g.noFlows {
		on = 0
	}
	if err := spec.Variables["flow_events_on"].Set(on); err != nil {
		return nil, fmt.Errorf("set flow_events_on: %w", err)
	}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{}}
	for name, m := range c {
		if m != nil {
			opts.MapReplacements[name] = m
		}
	}
	if err := spec.LoadAndAssign(&o.objs, opts); err != nil {
		return nil, fmt.Errorf("load BPF objects: %w", err)
	}
	o.held = [2]*content{{}, {}} // both slots empty
	for k, op := range crcZeroOps() {
		if err := o.objs.CrcZeros.Put(uint32(k), op); err != nil {
			o.Close()
			return nil, fmt.Errorf("fill crc_zeros: %w", err)
		}
	}
	return o, nil
}

// crcZeroOps returns, for k = 0..15, the CRC32c (reflected Castagnoli) register's linear map
// "feed 2^k zero bytes" as 32 columns: column i is the register after feeding them from a
// register holding only bit i. The programs fix SCTP checksums with them (bpf/policy.c).
func crcZeroOps() [16][32]uint32 {
	const poly = 0x82f63b78
	var ops [16][32]uint32
	apply := func(op *[32]uint32, v uint32) uint32 {
		var r uint32
		for i := 0; i < 32; i++ {
			if v&(1<<i) != 0 {
				r ^= op[i]
			}
		}
		return r
	}
	for i := 0; i < 32; i++ {
		reg := uint32(1) << i
		for b := 0; b < 8; b++ {
			reg = reg>>1 ^ poly&-(reg&1)
		}
		ops[0][i] = reg
	}
	for k := 1; k < 16; k++ {
		for i := 0; i < 32; i++ {
			ops[k][i] = apply(&ops[k-1], ops[k-1][i])
		}
	}
	return ops
}

// Close releases programs and maps.
func (o *Objects) Close() error { return o.objs.Close() }

// CounterNames name the programs' counters, in the order of enum counter in bpf/policy.c.
var CounterNames = []string{
	"pass_not_ip", "pass_no_endpoint", "pass_not_selected", "pass_tracked", "allow_ingress",
	"drop_ingress", "drop_spoof", "pass_other_protocol", "dnat", "reverse_nat", "no_backend",
	"redirect_peer", "redirect_uplink", "allow_egress", "drop_egress", "flow_events_lost",
	"drop_blocked", "xdp_drop_blocked", "drop_syn_limit", "drop_quarantine", "drop_shield",
	"dnat_outside", "snat_outside", "nat_back",
}

// Counters sums each counter over CPUs.
func (o *Objects) Counters() (map[string]uint64, error) {
	if n := o.objs.Counters.MaxEntries(); n != uint32(len(CounterNames)) {
		return nil, fmt.Errorf("the programs have %d counters, CounterNames %d", n, len(CounterNames))
	}
	out := map[string]uint64{}
	for i, name := range CounterNames {
		n, err := sumPerCPU(o.objs.Counters, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("counter %s: %w", name, err)
		}
		out[name] = n
	}
	return out, nil
}

// sumPerCPU reads entry i of a per-CPU counter array, summed over CPUs.
func sumPerCPU(m *ebpf.Map, i uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(i, &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// ipv4Key returns an address as the native-endian integer whose bytes are the address in
// network order, which is how the program reads ip->saddr.
func ipv4Key(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// Interface is a local pod's host-side veth.
type Interface struct {
	Index uint32 // 0: not bound to an interface (skips the anti-spoofing check)
	// Both ends' MACs, when known, let other local pods hand packets straight to this pod.
	HostMAC, PodMAC net.HardwareAddr
}

// Fill writes the tables as the next generation and puts it in force.
func (o *Objects) Fill(rs *ir.Ruleset, t *Tables, iface func(ir.PodID) Interface) error {
	return o.write(o.contentOf(rs, t, iface), o.gen+1)
}

// content is everything one slot's maps hold.
type content struct {
	endpoints map[uint32]policyEndpoint // by pod address
	ipcache   *ipcacheContent
	policy    map[[2]uint32]*sideContent // by endpoint and direction
	services  map[policySvcKey]policySvcValue
	backends  map[policyBackendKey]policyBackendValue
	svcRange  policySvcRange
	// svcPrefix is the smallest prefix holding every Service frontend (invalid: none).
	svcPrefix netip.Prefix
}

// ipcacheContent is the ipcache's entries and the table entries they were made from;
// sideContent one endpoint and direction's policy entries, likewise. Contents of successive
// generations share them where the Builder reused the tables, and writing skips what is shared.
type ipcacheContent struct {
	from []IPCacheEntry
	m    map[policyIpcacheKey]uint32
}

type sideContent struct {
	from []PolicyEntry
	m    map[policyPolicyKey]policyPolicyValue
}

// policyMap is every policy entry of c.
func (c *content) policyMap() map[policyPolicyKey]policyPolicyValue {
	out := map[policyPolicyKey]policyPolicyValue{}
	for _, s := range c.policy {
		maps.Copy(out, s.m)
	}
	return out
}

func (c *content) policyEntries() int {
	n := 0
	for _, s := range c.policy {
		n += len(s.m)
	}
	return n
}

// sameSlice says whether a and b are the same slice (not only equal).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// contentOf is what the maps hold for tables t of rs; iface describes each endpoint's veth.
// What the Builder reused is taken from the content in force as it is.
func (o *Objects) contentOf(rs *ir.Ruleset, t *Tables, iface func(ir.PodID) Interface) *content {
	prev := o.current()
	c := &content{endpoints: make(map[uint32]policyEndpoint, len(t.Endpoints)), policy: make(map[[2]uint32]*sideContent, len(t.sides))}
	for id, ep := range t.Endpoints {
		i := iface(id)
		v := policyEndpoint{Id: ep, Ifindex: i.Index}
		if t.Selected[[2]uint32{ep, uint32(ir.Ingress)}] {
			v.Flags |= policyEpFlagEP_SELECTED_INGRESS
		}
		if t.Selected[[2]uint32{ep, uint32(ir.Egress)}] {
			v.Flags |= policyEpFlagEP_SELECTED_EGRESS
		}
		if i.Index != 0 && len(i.HostMAC) == 6 && len(i.PodMAC) == 6 {
			v.Flags |= policyEpFlagEP_FAST
			copy(v.Mac[:], i.PodMAC)
			copy(v.HostMac[:], i.HostMAC)
		}
		c.endpoints[ipv4Key(rs.Pods[id].IP())] = v
	}
	if prev != nil && prev.ipcache != nil && sameSlice(prev.ipcache.from, t.IPCache) {
		c.ipcache = prev.ipcache
	} else {
		c.ipcache = &ipcacheContent{from: t.IPCache, m: make(map[policyIpcacheKey]uint32, len(t.IPCache))}
		for _, e := range t.IPCache {
			c.ipcache.m[policyIpcacheKey{Prefixlen: uint32(e.Prefix.Bits()), Addr: ipv4Key(e.Prefix.Addr())}] = uint32(e.Identity)
		}
	}
	sides := t.sides
	if len(sides) == 0 && len(t.Policy) > 0 {
		sides = groupSides(t.Policy) // tables not made by a Builder
	}
	for _, sd := range sides {
		id := [2]uint32{sd.ep, uint32(sd.dir)}
		if prev != nil {
			if p := prev.policy[id]; p != nil && sameSlice(p.from, sd.entries) {
				c.policy[id] = p
				continue
			}
		}
		sc := &sideContent{from: sd.entries, m: make(map[policyPolicyKey]policyPolicyValue, len(sd.entries))}
		for _, p := range sd.entries {
			k := policyPolicyKey{Prefixlen: 80 + uint32(p.PortBits), Endpoint: p.Endpoint, Identity: uint32(p.Identity),
				Protocol: uint8(p.Protocol), Direction: uint8(p.Direction), Port: portKey16(p.Port)}
			v := policyPolicyValue{Rule: p.Rule}
			if p.Allow {
				v.Allow = 1
			}
			sc.m[k] = v
		}
		c.policy[id] = sc
	}
	o.services(rs, c)
	return c
}

// groupSides splits entries into their endpoints and directions.
func groupSides(entries []PolicyEntry) []side {
	var out []side
	for i := 0; i < len(entries); {
		j := i
		for j < len(entries) && entries[j].Endpoint == entries[i].Endpoint && entries[j].Direction == entries[i].Direction {
			j++
		}
		out = append(out, side{ep: entries[i].Endpoint, dir: entries[i].Direction, entries: entries[i:j:j]})
		i = j
	}
	return out
}

// write makes the slot of generation gen hold c, writing only what differs from what it
// holds, and puts it in force. Until it is in force no packet reads the slot; a failed write
// leaves the generation in force as it was (and the slot to be rewritten whole next time).
func (o *Objects) write(c *content, gen uint32) error {
	slot := gen & 1
	if gen == o.gen {
		return fmt.Errorf("generation %d is in force already", gen)
	}
	// A table too small fails the whole write before any of it, never a truncated one
	// (cilium #28337: a full policy map).
	in := o.inner(slot)
	for i, n := range c.sizes() {
		if room := int((*in[i]).MaxEntries()); n > room {
			return &MapFullError{Map: innerNames[i], Need: n, Room: room}
		}
	}
	have := o.held[slot]
	o.held[slot] = nil
	if have == nil {
		if err := o.freshSlot(slot); err != nil {
			return err
		}
		have = &content{}
	}
	in = o.inner(slot)
	if err := errors.Join(
		writeDiff(*in[0], have.endpoints, c.endpoints),
		writeIPCache(*in[1], have.ipcache, c.ipcache),
		writePolicy(*in[2], have.policy, c.policy),
		writeDiff(*in[3], have.services, c.services),
		writeDiff(*in[4], have.backends, c.backends),
		o.objs.ServiceRange.Put(slot, c.svcRange),
	); err != nil {
		return err
	}
	o.held[slot] = c
	if err := o.objs.Active.Put(uint32(0), gen); err != nil {
		return fmt.Errorf("put generation %d in force: %w", gen, err)
	}
	o.gen = gen
	return nil
}

// MapFullError is a state that needs more entries than one of the tables holds: none of it
// was written, and the generation in force stays.
type MapFullError struct {
	Map        string // endpoints, ipcache, policy, services, backends; lb_services, lb_backends
	Need, Room int
}

func (e *MapFullError) Error() string {
	return fmt.Sprintf("eBPF map %s is full: this state needs %d entries and the map holds %d; the previous policy stays in force", e.Map, e.Need, e.Room)
}

// sizes are the entries c puts in each of a slot's maps, in inner's order.
func (c *content) sizes() [5]int {
	ipc := 0
	if c.ipcache != nil {
		ipc = len(c.ipcache.m)
	}
	return [5]int{len(c.endpoints), ipc, c.policyEntries(), len(c.services), len(c.backends)}
}

// Capacities are the most entries each of a slot's maps holds, by the kinds Entries reports.
func (o *Objects) Capacities() map[string]int {
	in := o.inner(0)
	return map[string]int{"endpoints": int((*in[0]).MaxEntries()), "ipcache_entries": int((*in[1]).MaxEntries()),
		"policy_entries": int((*in[2]).MaxEntries()), "service_frontends": int((*in[3]).MaxEntries()), "service_backends": int((*in[4]).MaxEntries())}
}

// current is what the slot in force holds (nil before the first write).
func (o *Objects) current() *content { return o.held[o.gen&1] }

// svcPrefix is the smallest prefix holding every Service frontend in force (invalid: none).
func (o *Objects) svcPrefix() netip.Prefix {
	if c := o.current(); c != nil {
		return c.svcPrefix
	}
	return netip.Prefix{}
}

// inner are a slot's maps: endpoints, ipcache, policy, services, backends.
func (o *Objects) inner(slot uint32) [5]**ebpf.Map {
	if slot == 0 {
		return [5]**ebpf.Map{&o.objs.Endpoints0, &o.objs.Ipcache0, &o.objs.Policy0, &o.objs.Services0, &o.objs.Backends0}
	}
	return [5]**ebpf.Map{&o.objs.Endpoints1, &o.objs.Ipcache1, &o.objs.Policy1, &o.objs.Services1, &o.objs.Backends1}
}

// freshSlot replaces a slot's maps (whose content is not known) with empty ones.
func (o *Objects) freshSlot(slot uint32) error {
	spec, err := loadPolicy()
	if err != nil {
		return err
	}
	o.sizes.apply(collSpec{spec})
	outers := [5]*ebpf.Map{o.objs.Endpoints, o.objs.Ipcache, o.objs.Policy, o.objs.Services, o.objs.Backends}
	for i, m := range o.inner(slot) {
		fresh, err := ebpf.NewMap(spec.Maps[innerNames[i]+strconv.Itoa(int(slot))])
		if err != nil {
			return fmt.Errorf("new %s map: %w", innerNames[i], err)
		}
		if err := outers[i].Put(slot, fresh); err != nil {
			fresh.Close()
			return fmt.Errorf("put a new %s map in slot %d: %w", innerNames[i], slot, err)
		}
		(*m).Close()
		*m = fresh
	}
	return nil
}

var innerNames = [5]string{"endpoints", "ipcache", "policy", "services", "backends"}

// writeIPCache makes the ipcache map holding have hold want (nothing to write when the two
// are shared).
func writeIPCache(m *ebpf.Map, have, want *ipcacheContent) error {
	if have == want {
		return nil
	}
	var h, w map[policyIpcacheKey]uint32
	if have != nil {
		h = have.m
	}
	if want != nil {
		w = want.m
	}
	return writeDiff(m, h, w)
}

// writePolicy makes the policy map holding have hold want, side by side: a side both share
// is skipped.
func writePolicy(m *ebpf.Map, have, want map[[2]uint32]*sideContent) error {
	var errs []error
	for id, w := range want {
		h := have[id]
		if h == w {
			continue
		}
		var hm map[policyPolicyKey]policyPolicyValue
		if h != nil {
			hm = h.m
		}
		errs = append(errs, writeDiff(m, hm, w.m))
	}
	for id, h := range have {
		if _, ok := want[id]; !ok {
			errs = append(errs, writeDiff(m, h.m, nil))
		}
	}
	return errors.Join(errs...)
}

// writeDiff makes a map holding have hold want: puts (in batches) and deletes of what differs.
func writeDiff[K, V comparable](m *ebpf.Map, have, want map[K]V) error {
	var keys []K
	var vals []V
	for k, v := range want {
		if h, ok := have[k]; !ok || h != v {
			keys = append(keys, k)
			vals = append(vals, v)
		}
	}
	if err := putAll(m, keys, vals); err != nil {
		return err
	}
	var gone []K
	for k := range have {
		if _, ok := want[k]; !ok {
			gone = append(gone, k)
		}
	}
	return deleteAll(m, gone)
}

// putAll writes entries: in batches of one syscall each where the kernel has batch operations
// for the map type, one by one otherwise.
func putAll[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	const batch = 4096
	for i := 0; i < len(keys); i += batch {
		j := min(i+batch, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], vals[i:j], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("batch update %s: %w", m, err)
			}
			for k := i; k < len(keys); k++ {
				if err := m.Put(keys[k], vals[k]); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return nil
}

// deleteAll deletes keys, in batches where the kernel can.
func deleteAll[K any](m *ebpf.Map, keys []K) error {
	const batch = 4096
	for i := 0; i < len(keys); i += batch {
		j := min(i+batch, len(keys))
		if _, err := m.BatchDelete(keys[i:j], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("batch delete %s: %w", m, err)
			}
			for k := i; k < len(keys); k++ {
				if err := m.Delete(keys[k]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return err
				}
			}
			return nil
		}
	}
	return nil
}

// replaceMap makes a small hash map hold want, putting its previous content back when a write
// fails.
func replaceMap[K comparable, V comparable](m *ebpf.Map, want map[K]V) error {
	have := map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return err
	}
	write := func(from, to map[K]V) error {
		for k := range from {
			if _, ok := to[k]; !ok {
				if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return err
				}
			}
		}
		for k, v := range to {
			if h, ok := from[k]; !ok || h != v {
				if err := m.Put(k, v); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := write(have, want); err != nil {
		return errors.Join(err, write(want, have))
	}
	return nil
}

// services adds the node's frontends (ir.Ruleset.Frontends: ClusterIPs, node ports on its
// addresses, external and load-balancer addresses, from inside and from outside) and their
// backends to c, and the ranges holding the frontends reached from inside. A frontend keeps its
// number while it exists, so its backends' keys stay.
func (o *Objects) services(rs *ir.Ruleset, c *content) {
	c.services, c.backends = map[policySvcKey]policySvcValue{}, map[policyBackendKey]policyBackendValue{}
	type frontend struct {
		key      policySvcKey
		flags    policySvcFlag
		affinity uint32
		backends []policyBackendValue
	}
	var fronts []frontend
	var keys []policySvcKey
	var vips, others []netip.Addr
	for _, fe := range rs.Frontends(o.node) {
		if !fe.Addr.Is4() || fe.Addr.IsLoopback() {
			continue // node ports on 127.0.0.1: the node's sockets, at connect time (SockLB)
		}
		f := frontend{key: policySvcKey{Vip: ipv4Key(fe.Addr), Port: portKey16(fe.Listen), Protocol: uint8(fe.Port.Protocol)},
			affinity: fe.Service.AffinitySeconds}
		if fe.Scope == ir.FromOutside {
			f.key.Scope = 1
		}
		if fe.Local {
			f.flags |= policySvcFlagSVC_LOCAL
		}
		if fe.NodePort {
			f.flags |= policySvcFlagSVC_NODEPORT
		}
		if len(ir.Usable(fe.Port.Backends, nil)) == 0 {
			f.flags |= policySvcFlagSVC_NO_ENDPOINTS
		}
		for _, b := range fe.Backends {
			if b.IP.Is4() {
				f.backends = append(f.backends, policyBackendValue{Addr: ipv4Key(b.IP), Port: portKey16(b.Port)})
			}
		}
		if _, dup := c.services[f.key]; dup {
			continue // an address listed twice (a ClusterIP also given as an external IP)
		}
		c.services[f.key] = policySvcValue{}
		fronts = append(fronts, f)
		keys = append(keys, f.key)
		switch {
		case fe.Scope == ir.FromOutside:
		case fe.NodePort || slices.Contains(fe.Service.ExternalIPs, fe.Addr) || slices.Contains(fe.Service.LoadBalancerIPs, fe.Addr):
			others = append(others, fe.Addr)
		default:
			vips = append(vips, fe.Addr)
		}
	}
	o.svcIDs.first = 1
	ids := o.svcIDs.assign(keys)
	for i, f := range fronts {
		for n, b := range f.backends {
			c.backends[policyBackendKey{Id: ids[i], Index: uint32(n)}] = b
		}
		c.services[f.key] = policySvcValue{Id: ids[i], Count: uint32(len(f.backends)), Flags: f.flags, Affinity: f.affinity, Rev: backendsRev(f.backends)}
	}
	// No frontends: {0, all ones} matches only 0.0.0.0.
	c.svcRange = policySvcRange{Addr: 0, Mask: 0xffffffff, Addr2: 0, Mask2: 0xffffffff}
	if p, ok := covering(vips); ok {
		c.svcPrefix = p
		c.svcRange.Addr, c.svcRange.Mask = ipv4Key(p.Addr()), binary.NativeEndian.Uint32(net.CIDRMask(p.Bits(), 32))
	}
	if p, ok := covering(others); ok {
		c.svcRange.Addr2, c.svcRange.Mask2 = ipv4Key(p.Addr()), binary.NativeEndian.Uint32(net.CIDRMask(p.Bits(), 32))
	}
}

// backendsRev identifies a list of backends, so that session affinity (which remembers a
// client's backend by its index) holds only while the list is the same.
func backendsRev(bs []policyBackendValue) uint32 {
	h := fnv.New32a()
	for _, b := range bs {
		_ = binary.Write(h, binary.NativeEndian, b)
	}
	return h.Sum32()
}

// covering is the longest prefix holding every address (IPv4).
func covering(addrs []netip.Addr) (netip.Prefix, bool) {
	if len(addrs) == 0 {
		return netip.Prefix{}, false
	}
	for bits := 32; bits >= 0; bits-- {
		p, _ := addrs[0].Prefix(bits)
		all := true
		for _, a := range addrs[1:] {
			if !p.Contains(a) {
				all = false
				break
			}
		}
		if all {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// portKey16 stores a port so that its bytes are in network order, as the packet carries it
// and as the LPM trie compares them (high bits first).
func portKey16(p uint16) uint16 {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 { // little endian
		return bits.ReverseBytes16(p)
	}
	return p
}
