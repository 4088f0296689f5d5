package ebpf

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"

	"github.com/cilium/ebpf"

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
