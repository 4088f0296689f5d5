package ebpf

import (
	"errors"
	"testing"

	"github.com/rampart-sec/rampart/internal/netnstest"
)

// TestMapFull: a state that needs more entries than a table holds fails as a whole, naming the
// map, the entries needed and the room, and the generation in force stays (cilium #28337: a
// full map must never mean a silently truncated policy).
func TestMapFull(t *testing.T) {
	netnstest.RequireRoot(t)
	o, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.write(&content{}, o.gen+1); err != nil {
		t.Fatal(err)
	}
	inForce := o.gen
	room := o.Capacities()["service_frontends"]
	c := &content{services: map[policySvcKey]policySvcValue{}}
	for i := 0; i <= room; i++ {
		c.services[policySvcKey{Vip: uint32(i), Port: 80, Protocol: 6}] = policySvcValue{Id: uint32(i)}
	}
	err = o.write(c, o.gen+1)
	var full *MapFullError
	if !errors.As(err, &full) || full.Map != "services" || full.Need != room+1 || full.Room != room {
		t.Fatalf("write of %d frontends into a map of %d: %v", room+1, room, err)
	}
	var active uint32
	if err := o.objs.Active.Lookup(uint32(0), &active); err != nil || active != inForce || o.gen != inForce {
		t.Fatalf("generation in force %d (objects say %d), want %d still: %v", active, o.gen, inForce, err)
	}
	// The next write of a state that fits goes through.
	delete(c.services, policySvcKey{Vip: uint32(room), Port: 80, Protocol: 6})
	if err := o.write(c, o.gen+1); err != nil {
		t.Fatalf("write of %d frontends: %v", room, err)
	}
}
