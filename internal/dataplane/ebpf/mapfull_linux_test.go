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

// TestMapSizes: sizes given by kind apply to both slots of a generation table (a fresh slot
// too) and to the connect-time balancer, and a state that outgrows them fails whole.
func TestMapSizes(t *testing.T) {
	netnstest.RequireRoot(t)
	sizes, err := ParseMapSizes("services=8, conntrack=1024,lb_services=16")
	if err != nil {
		t.Fatal(err)
	}
	o, err := load(nil, genOptions{sizes: sizes})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if got := o.Capacities()["service_frontends"]; got != 8 {
		t.Fatalf("service_frontends capacity %d, want 8", got)
	}
	if got := o.objs.Conntrack.MaxEntries(); got != 1024 {
		t.Errorf("conntrack holds %d, want 1024", got)
	}
	c := &content{services: map[policySvcKey]policySvcValue{}}
	for i := 0; i < 8; i++ {
		c.services[policySvcKey{Vip: uint32(i), Port: 80, Protocol: 6}] = policySvcValue{Id: uint32(i)}
	}
	for slot := uint32(0); slot < 2; slot++ {
		if err := o.freshSlot(slot); err != nil { // a fresh slot's maps must fit the outer map
			t.Fatal(err)
		}
		if err := o.write(c, o.gen+1); err != nil {
			t.Fatalf("8 frontends into maps of 8: %v", err)
		}
	}
	c.services[policySvcKey{Vip: 99, Port: 80, Protocol: 6}] = policySvcValue{Id: 99}
	var full *MapFullError
	if err := o.write(c, o.gen+1); !errors.As(err, &full) || full.Room != 8 {
		t.Fatalf("9 frontends into maps of 8: %v, want a MapFullError", err)
	}
}

func TestParseMapSizes(t *testing.T) {
	for _, bad := range []string{"services", "services=0", "services=-1", "services=x", "nothing=5", "services=99999999999"} {
		if _, err := ParseMapSizes(bad); err == nil {
			t.Errorf("ParseMapSizes(%q) accepted", bad)
		}
	}
	got, err := ParseMapSizes("backends=2000000,policy=100")
	if err != nil || got["backends"] != 2000000 || got["policy"] != 100 || len(got) != 2 {
		t.Errorf("ParseMapSizes: %v %v", got, err)
	}
}
