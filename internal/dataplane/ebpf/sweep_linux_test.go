package ebpf

import (
	"errors"
	"testing"
	"unsafe"

	cebpf "github.com/cilium/ebpf"

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
