package ebpf

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Sweep deletes the tracked flows the evaluator now denies, so a policy change cuts the
// connections it forbids while the others keep flowing. Entries hold each flow in the
// direction of its first packet, after Service DNAT: the view policy is decided on.
func (d *Dataplane) Sweep(ev *policy.Evaluator) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, nil
	}
	ct := d.objs.objs.Conntrack
	var (
		k     policyCtKey
		v     policyCtValue
		stale []policyCtKey
	)
	it := ct.Iterate()
	for it.Next(&k, &v) {
		var proto ir.Protocol
		switch k.Protocol {
		case 6:
			proto = ir.TCP
		case 17:
			proto = ir.UDP
		case 132:
			proto = ir.SCTP
		default:
			continue
		}
		f := policy.Flow{Src: addrOf(k.Saddr), Dst: addrOf(k.Daddr), Protocol: proto, Port: portOf(k.Dport)}
		if !ev.Verdict(f).Allowed {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	var errs []error
	for _, k := range stale {
		errs = append(errs, ct.Delete(k))
	}
	return len(stale), errors.Join(errs...)
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
