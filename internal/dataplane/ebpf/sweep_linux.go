package ebpf

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Sweep deletes the tracked flows the evaluator now denies, so a policy change cuts the
// connections it forbids while the others keep flowing. A flow's forward entry holds it in the
// direction of its first packet, after Service DNAT (the view policy is decided on); its reply
// entry goes with it.
func (d *Dataplane) Sweep(ev *policy.Evaluator) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, nil
	}
	ct := d.objs.objs.Conntrack
	var (
		k       policyCtKey
		v       policyCtValue
		stale   []policyCtKey
		replies []policyCtKey
	)
	allowed := ev.NewAllowed()
	it := ct.Iterate()
	for it.Next(&k, &v) {
		if v.Flags&policyCtFlagCT_REPLY != 0 {
			replies = append(replies, k) // judged with its flow's forward entry
			continue
		}
		proto, ok := ir.ProtocolOf(uint8(k.Protocol))
		if !ok || k.Protocol > 0xff {
			continue
		}
		f := policy.Flow{Src: addrOf(k.Saddr), Dst: addrOf(k.Daddr), Protocol: proto, Port: portOf(k.Dport)}
		if !allowed.Allowed(f) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	return removeFlows(ct, stale, replies)
}

// ctMap is what removeFlows needs of the conntrack map.
type ctMap interface {
	Lookup(key, value any) error
	Delete(key any) error
}

// removeFlows deletes the stale flows (forward and reply entries) and the reply entries whose
// forward entry is gone, returning how many flows it removed. The programs delete entries too
// (a closed connection, an LRU eviction) while the sweep runs, so an entry already gone is
// what the sweep wanted, not an error.
func removeFlows(ct ctMap, stale, replies []policyCtKey) (int, error) {
	var errs []error
	del := func(k policyCtKey) bool {
		err := ct.Delete(k)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
		return err == nil
	}
	deleted := 0
	for _, k := range stale {
		if del(k) {
			deleted++
		}
		del(reverse(k))
	}
	// A reply entry whose forward entry is gone (deleted above, or evicted) must not keep
	// admitting packets on its own.
	var fv policyCtValue
	for _, k := range replies {
		if err := ct.Lookup(reverse(k), &fv); errors.Is(err, ebpf.ErrKeyNotExist) {
			del(k)
		}
	}
	return deleted, errors.Join(errs...)
}

func reverse(k policyCtKey) policyCtKey {
	r := k
	r.Saddr, r.Daddr = k.Daddr, k.Saddr
	r.Sport, r.Dport = k.Dport, k.Sport
	return r
}

// addrOf and portOf undo ipv4Key and portKey16.
func addrOf(k uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], k)
	return netip.AddrFrom4(b)
}

func portOf(p uint16) uint16 {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return bits.ReverseBytes16(p)
	}
	return p
}

// Idle timeouts of tracked flows (as Cilium's conntrack GC; the kernel's conntrack ages its own
// entries, the programs' LRU map only evicts when full). A flow idle past its timeout is
// removed: its next packet is a new flow, decided by policy again.
const (
	ctIdleTCP        = 6 * time.Hour    // established
	ctIdleTCPOpening = time.Minute      // no ACK seen yet
	ctIdleTCPClosing = 10 * time.Second // a FIN or RST seen
	ctIdleOther      = 3 * time.Minute  // UDP, SCTP: replies seen or not
)

// expired says whether a flow whose forward entry is fwd (and reply entry rev, nil when gone)
// has been idle past its timeout at now (bpf_ktime_get_ns's clock).
func expired(k policyCtKey, fwd policyCtValue, rev *policyCtValue, now uint64) bool {
	seen, flags := fwd.SeenNs, fwd.TcpFlags
	if rev != nil {
		seen, flags = max(seen, rev.SeenNs), flags|rev.TcpFlags
	}
	if now <= seen {
		return false
	}
	idle := time.Duration(now - seen)
	switch {
	case k.Protocol != 6: // not TCP
		return idle > ctIdleOther
	case flags&(flow.FlagFIN|flow.FlagRST) != 0: // ct_value.tcp_flags: the header's flags byte
		return idle > ctIdleTCPClosing
	case flags&flow.FlagACK == 0:
		return idle > ctIdleTCPOpening
	}
	return idle > ctIdleTCP
}

// CollectGarbage removes the tracked flows idle past their timeout (expired), forward and
// reply entries together, and reply entries left without their flow, returning how many flows
// it removed (dataplane.Collector). The agent calls it periodically: without it, entries of
// flows long gone stay until the LRU map is full and evicts, then the least recently used,
// which may be a live flow that is quiet.
func (d *Dataplane) CollectGarbage() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, nil
	}
	now, err := ktimeNow()
	if err != nil {
		return 0, err
	}
	return collect(d.objs.objs.Conntrack, now)
}

// ctIterMap is what collect needs of the conntrack map.
type ctIterMap interface {
	ctMap
	Iterate() *ebpf.MapIterator
}

func collect(ct ctIterMap, now uint64) (int, error) {
	var (
		k       policyCtKey
		v       policyCtValue
		stale   []policyCtKey
		replies []policyCtKey
	)
	fwd := map[policyCtKey]policyCtValue{}
	rev := map[policyCtKey]policyCtValue{} // by the forward entry's key
	it := ct.Iterate()
	for it.Next(&k, &v) {
		if v.Flags&policyCtFlagCT_REPLY != 0 {
			replies = append(replies, k)
			rev[reverse(k)] = v
			continue
		}
		fwd[k] = v
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	for k, v := range fwd {
		var r *policyCtValue
		if rv, ok := rev[k]; ok {
			r = &rv
		}
		if expired(k, v, r, now) {
			stale = append(stale, k)
		}
	}
	return removeFlows(ct, stale, replies)
}
