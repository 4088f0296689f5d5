package ebpf

import (
	"errors"
	"testing"
	"time"
	"unsafe"

	cebpf "github.com/cilium/ebpf"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

// TestRemoveFlowsToleratesVanishedEntries: the programs delete conntrack entries while a sweep
// runs (a connection closed, an entry evicted). A flow the sweep found stale and that is gone
// when it deletes it is not an error, and is not counted as removed; a reply entry left without
// its forward entry goes too.
func TestRemoveFlowsToleratesVanishedEntries(t *testing.T) {
	netnstest.RequireRoot(t)
	var k policyCtKey
	var v policyCtValue
	m, err := cebpf.NewMap(&cebpf.MapSpec{Type: cebpf.Hash, KeySize: uint32(unsafe.Sizeof(k)), ValueSize: uint32(unsafe.Sizeof(v)), MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	flow := func(sport uint16) policyCtKey {
		return policyCtKey{Saddr: 0x0100000a, Daddr: 0x0200000a, Sport: sport, Dport: 80, Protocol: 6}
	}
	put := func(k policyCtKey, reply bool) {
		var v policyCtValue
		if reply {
			v.Flags = policyCtFlagCT_REPLY
		}
		if err := m.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	live, vanished, orphan := flow(1000), flow(1001), flow(1002)
	put(live, false)
	put(reverse(live), true)
	put(reverse(orphan), true) // its forward entry was evicted
	// vanished: found stale by the walk, then deleted by the program before the sweep deletes it.
	n, err := removeFlows(m, []policyCtKey{live, vanished}, []policyCtKey{reverse(live), reverse(orphan)})
	if err != nil {
		t.Fatalf("removeFlows: %v", err)
	}
	if n != 1 {
		t.Errorf("removed %d flows, want 1 (the vanished one was not removed by the sweep)", n)
	}
	for _, k := range []policyCtKey{live, reverse(live), reverse(orphan)} {
		if err := m.Lookup(k, &v); !errors.Is(err, cebpf.ErrKeyNotExist) {
			t.Errorf("entry %+v still there (lookup: %v)", k, err)
		}
	}
}

// TestCollectExpiresIdleFlows: flows idle past their protocol's timeout go, forward and reply
// entries together, judged by the later of the two entries' last packets and the flags both
// saw; reply entries left without their flow go too; the rest stay.
func TestCollectExpiresIdleFlows(t *testing.T) {
	netnstest.RequireRoot(t)
	var k policyCtKey
	var v policyCtValue
	m, err := cebpf.NewMap(&cebpf.MapSpec{Type: cebpf.Hash, KeySize: uint32(unsafe.Sizeof(k)), ValueSize: uint32(unsafe.Sizeof(v)), MaxEntries: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const now = uint64(100 * time.Hour)
	ago := func(d time.Duration) uint64 { return now - uint64(d) }
	type idleFlow struct {
		name       string
		proto      uint32
		fwd, rev   uint64 // last packet of each direction (rev 0: no reply entry)
		fwdF, revF uint8  // TCP flags each direction saw
		gone       bool
	}
	flows := []idleFlow{
		{"established, quiet for an hour", 6, ago(time.Hour), ago(time.Hour), flow.FlagACK, flow.FlagACK, false},
		{"established, quiet for 7 hours", 6, ago(7 * time.Hour), ago(7 * time.Hour), flow.FlagACK, flow.FlagACK, true},
		{"established, the reply direction recent", 6, ago(7 * time.Hour), ago(time.Minute), flow.FlagACK, flow.FlagACK, false},
		{"closing, 11 s ago", 6, ago(11 * time.Second), ago(11 * time.Second), flow.FlagACK | flow.FlagFIN, flow.FlagACK, true},
		{"closing, the FIN on the reply side", 6, ago(11 * time.Second), ago(11 * time.Second), flow.FlagACK, flow.FlagACK | flow.FlagFIN, true},
		{"closing, 5 s ago", 6, ago(5 * time.Second), ago(5 * time.Second), flow.FlagACK | flow.FlagRST, flow.FlagACK, false},
		{"opening, SYN 2 minutes ago", 6, ago(2 * time.Minute), ago(2 * time.Minute), 0x02, 0, true},
		{"opening, SYN 30 s ago", 6, ago(30 * time.Second), ago(30 * time.Second), 0x02, 0, false},
		{"UDP, 4 minutes ago", 17, ago(4 * time.Minute), ago(4 * time.Minute), 0, 0, true},
		{"UDP, 2 minutes ago", 17, ago(2 * time.Minute), ago(2 * time.Minute), 0, 0, false},
		{"SCTP, without a reply entry, 4 minutes ago", 132, ago(4 * time.Minute), 0, 0, 0, true},
		{"a packet seen after now was read", 6, now + 1000, now + 1000, 0x02, 0, false},
	}
	key := func(i int, proto uint32) policyCtKey {
		return policyCtKey{Endpoint: 1, Saddr: 0x0100000a, Daddr: 0x0200000a, Sport: uint16(1000 + i), Dport: 80, Protocol: proto}
	}
	orphan := reverse(key(99, 6))
	if err := m.Put(orphan, policyCtValue{Flags: policyCtFlagCT_REPLY, SeenNs: now}); err != nil {
		t.Fatal(err)
	}
	wantGone := 0
	for i, f := range flows {
		if err := m.Put(key(i, f.proto), policyCtValue{SeenNs: f.fwd, TcpFlags: f.fwdF}); err != nil {
			t.Fatal(err)
		}
		if f.rev != 0 {
			if err := m.Put(reverse(key(i, f.proto)), policyCtValue{Flags: policyCtFlagCT_REPLY, SeenNs: f.rev, TcpFlags: f.revF}); err != nil {
				t.Fatal(err)
			}
		}
		if f.gone {
			wantGone++
		}
	}
	n, err := collect(m, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != wantGone {
		t.Errorf("removed %d flows, want %d", n, wantGone)
	}
	for i, f := range flows {
		for _, k := range []policyCtKey{key(i, f.proto), reverse(key(i, f.proto))} {
			if k != key(i, f.proto) && f.rev == 0 {
				continue
			}
			err := m.Lookup(k, &v)
			if gone := errors.Is(err, cebpf.ErrKeyNotExist); gone != f.gone {
				t.Errorf("%s: entry %+v gone=%v, want %v", f.name, k, gone, f.gone)
			}
		}
	}
	if err := m.Lookup(orphan, &v); !errors.Is(err, cebpf.ErrKeyNotExist) {
		t.Errorf("a reply entry without its flow stayed")
	}
}
