package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Objects are the loaded programs and maps of one node.
type Objects struct {
	objs policyObjects
	// svcRange is the smallest prefix holding every Service frontend (invalid: none).
	svcRange netip.Prefix
	// frontends counts the (address, port) frontends written.
	frontends int
}

// Load loads the programs and creates their maps (not pinned, not attached). Given the previous
// generation, its flow state (conntrack, reverse NAT, the flow-event ring), counters, blocklist,
// SYN limits, quarantine and shields are reused, so flows survive new tables, counters keep counting and
// the threat engine's responses stay.
func Load(prev *Objects) (*Objects, error) { return load(prev, genOptions{}) }

// genOptions are a generation's load-time constants.
type genOptions struct {
	generation uint32 // stamped on its flow events, to resolve their rule ids
	noFlows    bool   // write no flow events
}

func load(prev *Objects, g genOptions) (*Objects, error) {
	if prev != nil {
		return loadWith(carried{prev.objs.Conntrack, prev.objs.Revnat, prev.objs.Counters, prev.objs.FlowEvents, prev.objs.Blocklist,
			prev.objs.SynLimits, prev.objs.SynBuckets, prev.objs.Quarantine, prev.objs.QuarantineAllow, prev.objs.Shields}, g)
	}
	return loadWith(carried{}, g)
}

// carried are the maps one generation hands to the next (nil: new ones).
type carried struct {
	conntrack, revnat, counters, flowEvents, blocklist, synLimits, synBuckets, quarantine, quarantineAllow, shields *ebpf.Map
}

// loadWith loads a generation using the given flow-state and counter maps.
func loadWith(c carried, g genOptions) (*Objects, error) {
	o := &Objects{}
	spec, err := loadPolicy()
	if err != nil {
		return nil, err
	}
	on := uint32(1)
	if g.noFlows {
		on = 0
	}
	if err := spec.Variables["generation"].Set(g.generation); err != nil {
		return nil, fmt.Errorf("set generation: %w", err)
	}
	if err := spec.Variables["flow_events_on"].Set(on); err != nil {
		return nil, fmt.Errorf("set flow_events_on: %w", err)
	}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{}}
	for name, m := range map[string]*ebpf.Map{"conntrack": c.conntrack, "revnat": c.revnat, "counters": c.counters, "flow_events": c.flowEvents,
		"blocklist": c.blocklist, "syn_limits": c.synLimits, "syn_buckets": c.synBuckets,
		"quarantine": c.quarantine, "quarantine_allow": c.quarantineAllow, "shields": c.shields} {
		if m != nil {
			opts.MapReplacements[name] = m
		}
	}
	if err := spec.LoadAndAssign(&o.objs, opts); err != nil {
		return nil, fmt.Errorf("load BPF objects: %w", err)
	}
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

// Fill writes the tables into freshly loaded maps; iface describes each endpoint's veth.
func (o *Objects) Fill(rs *ir.Ruleset, t *Tables, iface func(ir.PodID) Interface) error {
	var errs []error
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
		errs = append(errs, o.objs.Endpoints.Put(ipv4Key(rs.Pods[id].IP()), v))
	}
	ipKeys := make([]policyIpcacheKey, len(t.IPCache))
	ipVals := make([]uint32, len(t.IPCache))
	for i, c := range t.IPCache {
		ipKeys[i] = policyIpcacheKey{Prefixlen: uint32(c.Prefix.Bits()), Addr: ipv4Key(c.Prefix.Addr())}
		ipVals[i] = uint32(c.Identity)
	}
	errs = append(errs, putAll(o.objs.Ipcache, ipKeys, ipVals))
	polKeys := make([]policyPolicyKey, len(t.Policy))
	polVals := make([]policyPolicyValue, len(t.Policy))
	for i, p := range t.Policy {
		polKeys[i] = policyPolicyKey{Prefixlen: 80 + uint32(p.PortBits), Endpoint: p.Endpoint, Identity: uint32(p.Identity),
			Protocol: uint8(p.Protocol), Direction: uint8(p.Direction), Port: portKey16(p.Port)}
		polVals[i].Rule = p.Rule
		if p.Allow {
			polVals[i].Allow = 1
		}
	}
	errs = append(errs, putAll(o.objs.Policy, polKeys, polVals))
	errs = append(errs, o.fillServices(rs))
	return errors.Join(errs...)
}

// putAll writes every entry into a map just created: in batches of one syscall each where the
// kernel has batch operations for the map type, one by one otherwise (a 10,000-pod cluster's
// policy table has some 450,000 entries).
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

// fillServices writes every ClusterIP frontend and its backends, and the range holding the
// frontends.
func (o *Objects) fillServices(rs *ir.Ruleset) error {
	var errs []error
	id := uint32(0)
	var vips []netip.Addr
	for _, s := range rs.Services {
		for _, sp := range s.Ports {
			for _, vip := range s.ClusterIPs {
				if !vip.Is4() {
					continue
				}
				id++
				var n uint32
				for _, b := range sp.Backends {
					if !b.IP.Is4() {
						continue
					}
					errs = append(errs, o.objs.Backends.Put(policyBackendKey{Id: id, Index: n}, policyBackendValue{Addr: ipv4Key(b.IP), Port: portKey16(b.Port)}))
					n++
				}
				k := policySvcKey{Vip: ipv4Key(vip), Port: portKey16(sp.Port), Protocol: uint8(sp.Protocol)}
				errs = append(errs, o.objs.Services.Put(k, policySvcValue{Id: id, Count: n}))
				vips = append(vips, vip)
			}
		}
	}
	o.frontends = len(vips)
	rg := policySvcRange{Addr: 0, Mask: 0xffffffff} // no frontends: matches only 0.0.0.0
	if p, ok := covering(vips); ok {
		o.svcRange = p
		rg = policySvcRange{Addr: ipv4Key(p.Addr()), Mask: binary.NativeEndian.Uint32(net.CIDRMask(p.Bits(), 32))}
	}
	errs = append(errs, o.objs.ServiceRange.Put(uint32(0), rg))
	return errors.Join(errs...)
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
