package node

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

// TestInterfaceFollowsChanges: a local pod's interface is the veth its route leaves through;
// while Watch runs the answers are remembered, and a link or route change is seen at once
// (the callback runs after the answers are forgotten): moved to another veth, then gone.
func TestInterfaceFollowsChanges(t *testing.T) {
	netnstest.RequireRoot(t, "ip")
	ns := netnstest.New(t, "rn-node")
	for _, v := range []string{"va", "vb"} {
		netnstest.Run(t, ns, "ip", "link", "add", v, "type", "veth", "peer", "name", v+"p")
		netnstest.Run(t, ns, "ip", "link", "set", v, "up")
		netnstest.Run(t, ns, "ip", "link", "set", v+"p", "up")
	}
	r, err := Open("n1", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 100)
	if err := r.Watch(ctx, func(string) { changed <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	pod := &ir.Pod{Node: "n1", IPs: []netip.Addr{netip.MustParseAddr("10.9.0.5")}}
	// want waits for the answer (the change's events arrive after the command returns).
	want := func(name string, ok bool) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			n, o := r.Interface(pod)
			if n == name && o == ok {
				return
			}
			select {
			case <-changed:
			case <-timeout:
				t.Fatalf("interface %q %v, want %q %v", n, o, name, ok)
			}
		}
	}
	if n, ok := r.Interface(pod); ok {
		t.Fatalf("no route yet, interface %q", n)
	}
	netnstest.Run(t, ns, "ip", "route", "add", "10.9.0.5/32", "dev", "va")
	want("va", true)
	if n, ok := r.Interface(&ir.Pod{Node: "n2", IPs: pod.IPs}); ok {
		t.Fatalf("another node's pod has interface %q", n)
	}
	netnstest.Run(t, ns, "ip", "route", "replace", "10.9.0.5/32", "dev", "vb")
	want("vb", true)
	netnstest.Run(t, ns, "ip", "link", "del", "vb")
	want("", false)
}
