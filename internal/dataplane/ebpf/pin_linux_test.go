package ebpf_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

const pinCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {pod: client}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: x, labels: {pod: other}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: x, labels: {pod: server}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-client, namespace: x}
spec:
  podSelector: {matchLabels: {pod: server}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: client}}}]}]
`

// TestPinnedRestart: with PinDir, enforcement and established flows outlive the process's
// handles (an agent restart), a new Dataplane adopts the pinned links and flow state instead of
// stacking a second attachment, and Remove takes everything away.
func TestPinnedRestart(t *testing.T) {
	l := labtest.New(t, 1, "none", pinCluster)
	ctx := context.Background()
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })
	pinDir := filepath.Join(bpffs, "node-1")
	_, rs := l.Snapshot()
	node := "node-1"
	newDP := func() *ebpf.Dataplane {
		dp := ebpf.New(dataplane.Node{Name: node, Interface: func(p *ir.Pod) (string, bool) {
			if p.Node != node || p.HostNetwork {
				return "", false
			}
			return l.Fabric.PodInterface(p.Namespace, p.Name), true
		}, Uplink: "eth0"}, l.Fabric.NodeNetns(node))
		dp.Attach = ebpf.AttachTCX
		dp.PinDir = pinDir
		return dp
	}
	reach := func(from string) bool {
		t.Helper()
		ps, err := l.Probe(ctx, controller.ProbeRequest{From: "x/" + from, To: "x/server", Via: "pod", Timeout: 700 * time.Millisecond})
		if err != nil || len(ps) != 1 {
			t.Fatalf("probe: %v %+v", err, ps)
		}
		return ps[0].Connected
	}
	onUplink := 0
	attached := func() int {
		t.Helper()
		ns := l.Fabric.NodeNetns(node)
		up, err := netnstest.TCXPrograms(ns, "eth0", cebpf.AttachTCXIngress)
		if err != nil {
			t.Fatal(err)
		}
		onUplink = up
		n, err := netnstest.TCXPrograms(ns, l.Fabric.PodInterface("x", "server"), cebpf.AttachTCXIngress, cebpf.AttachTCXEgress)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	dp1 := newDP()
	if err := dp1.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if !reach("client") || reach("other") {
		t.Fatal("policy not enforced after the first sync")
	}
	conn, err := l.Fabric.DialTCP(ctx, "x", "client", netip.AddrPortFrom(podIP(rs, "x/server"), 80))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip := labtest.Echo(t, conn)

	// The "agent" stops: its handles go, the pinned programs stay in force.
	if err := dp1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip("while stopped"); err != nil {
		t.Fatalf("established connection broke when the process let go: %v", err)
	}
	if !reach("client") || reach("other") {
		t.Fatal("policy not in force while no process holds the programs")
	}
	if n := attached(); n != 2 || onUplink != 1 {
		t.Fatalf("%d programs on the server's veth, %d on the uplink, want 2 (from_pod, to_pod) and 1", n, onUplink)
	}

	// A new process adopts links and flow state.
	dp2 := newDP()
	if err := dp2.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if n := attached(); n != 2 || onUplink != 1 {
		t.Fatalf("after adoption %d programs on the server's veth, %d on the uplink, want 2 and 1 (adopted, not stacked)", n, onUplink)
	}
	if err := roundTrip("after restart"); err != nil {
		t.Fatalf("established connection broke across the restart: %v", err)
	}
	if !reach("client") || reach("other") {
		t.Fatal("policy not enforced after adoption")
	}
	// The new programs use the first process's flow state: connections, Service affinity and
	// outside clients' SNAT stay as they were.
	mapIDs := append(linkedMaps(t, filepath.Join(pinDir, "links", l.Fabric.PodInterface("x", "server")+"-in")),
		linkedMaps(t, filepath.Join(pinDir, "links", "uplink-in"))...)
	uses := map[cebpf.MapID]bool{}
	for _, id := range mapIDs {
		uses[id] = true
	}
	for _, name := range []string{"conntrack", "revnat", "affinity", "nat_out", "nat_back", "flow_events"} {
		m, err := cebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if err != nil {
			t.Errorf("%s not pinned: %v", name, err)
			continue
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := info.ID(); !uses[id] {
			t.Errorf("the adopting programs do not use the pinned %s (map %d; they use %v)", name, id, mapIDs)
		}
	}

	if err := dp2.Remove(); err != nil {
		t.Fatal(err)
	}
	if n := attached(); n != 0 || onUplink != 0 {
		t.Errorf("%d programs left on the veth and %d on the uplink after Remove", n, onUplink)
	}
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Errorf("pins left after Remove: %v", err)
	}
	if !reach("other") {
		t.Error("still enforcing after Remove")
	}
}

// linkedMaps returns the maps of the program behind a pinned link.
func linkedMaps(t *testing.T, pin string) []cebpf.MapID {
	t.Helper()
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	prog, err := cebpf.NewProgramFromID(info.Program)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	pi, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := pi.MapIDs()
	return ids
}

func podIP(rs *ir.Ruleset, key string) netip.Addr {
	for i := range rs.Pods {
		if rs.Pods[i].Key() == key {
			return rs.Pods[i].IP()
		}
	}
	return netip.Addr{}
}
