package threat

import (
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

const clusterYAML = `
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {role: client}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {role: server}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: app}
spec: {nodeName: n2, containers: [{name: c, image: x}]}
status: {podIP: 10.0.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: app, labels: {decoy: "true"}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIP: 10.0.1.9}
`

var testProtected = Protected{Ranges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}, Nodes: []netip.Addr{netip.MustParseAddr("192.168.0.1")}}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// blocker records what the engine gives the kernel: blocked prefixes and SYN limits.
type blocker struct {
	got      [][]netip.Prefix
	limits   [][]dataplane.SynLimit
	quar     []dataplane.Quarantine
	shields  []dataplane.MSSShield
	conns    [][]dataplane.ConnLimit
	recounts int
}

func (b *blocker) SetConnLimits(l []dataplane.ConnLimit) error {
	b.conns = append(b.conns, l)
	return nil
}

func (b *blocker) RecountConns() error { b.recounts++; return nil }

func (b *blocker) SetMSSShield(s dataplane.MSSShield) error {
	b.shields = append(b.shields, s)
	return nil
}

func (b *blocker) SetQuarantine(q dataplane.Quarantine) error { b.quar = append(b.quar, q); return nil }

func (b *blocker) lastQuarantine() []netip.Addr {
	if len(b.quar) == 0 {
		return nil
	}
	return b.quar[len(b.quar)-1].Pods
}

func (b *blocker) SetBlocked(p []netip.Prefix) error { b.got = append(b.got, p); return nil }

func (b *blocker) SetSynLimits(l []dataplane.SynLimit) error {
	b.limits = append(b.limits, l)
	return nil
}

func (b *blocker) lastLimits() []dataplane.SynLimit {
	if len(b.limits) == 0 {
		return nil
	}
	return b.limits[len(b.limits)-1]
}

func cluster(t *testing.T, td string) *model.Cluster {
	t.Helper()
	objs, err := model.Decode(strings.NewReader(clusterYAML+"---\n"+td), "test.yaml", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return model.FromObjects(objs)
}

func engine(t *testing.T, td string) (*Engine, *fakeClock, *blocker) {
	t.Helper()
	clk := &fakeClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := &blocker{}
	e := New(Config{Node: "n1", Now: clk.now, Blocker: b, Limiter: b, Quarantiner: b, Shielder: b, ConnLimiter: b})
	if err := e.Configure(cluster(t, td), testProtected); err != nil {
		t.Fatal(err)
	}
	return e, clk, b
}

func ev(clk *fakeClock, dir ir.Direction, proto ir.Protocol, flags uint8, src, dst string) flow.Event {
	return flow.Event{Time: clk.t, Direction: dir, Allowed: true, TCPFlags: flags,
		Tuple: flow.Tuple{Protocol: proto, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}}
}

const portScanTD = `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    portScan: {action: alert}
`

func alertsOf(e *Engine, typ string) []Alert { return e.Log().Query(Filter{Type: typ}) }

func TestPortScan(t *testing.T) {
	cases := []struct {
		name  string
		probe func(e *Engine, clk *fakeClock)
		want  int // port-scan alerts
		check func(t *testing.T, a Alert)
	}{
		{"vertical SYN scan of a pod", func(e *Engine, clk *fakeClock) {
			for p := 1; p <= 100; p++ {
				e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.2:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
			}
		}, 1, func(t *testing.T, a Alert) {
			if a.Source.Pod != "client" || a.Target.Pod != "server" || a.Evidence.Scan != "tcp-syn" || len(a.Evidence.Ports) != 15 {
				t.Errorf("alert %+v", a)
			}
		}},
		{"horizontal scan, addresses with no pod", func(e *Engine, clk *fakeClock) {
			for h := 1; h <= 40; h++ {
				e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.2:40000", netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 5, byte(h)}), 22).String()))
			}
		}, 1, func(t *testing.T, a Alert) {
			if a.Source.Pod != "client" || len(a.Evidence.Hosts) != 25 || a.Evidence.Ports[0] != 22 {
				t.Errorf("alert %+v", a)
			}
		}},
		{"UDP scan", func(e *Engine, clk *fakeClock) {
			for p := 1; p <= 20; p++ {
				e.Observe(ev(clk, ir.Egress, ir.UDP, 0, "10.0.1.2:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
			}
		}, 1, func(t *testing.T, a Alert) {
			if a.Evidence.Scan != "udp" {
				t.Errorf("alert %+v", a)
			}
		}},
		{"XMAS scan", func(e *Engine, clk *fakeClock) {
			for p := 1; p <= 20; p++ {
				e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagFIN|flow.FlagPSH|flow.FlagURG, "10.0.1.2:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
			}
		}, 1, func(t *testing.T, a Alert) {
			if a.Evidence.Scan != "tcp-xmas" {
				t.Errorf("alert %+v", a)
			}
		}},
		{"a second kind of scan of the same target is a second alert", func(e *Engine, clk *fakeClock) {
			for _, flags := range []uint8{flow.FlagSYN, flow.FlagFIN} {
				for p := 1; p <= 20; p++ {
					e.Observe(ev(clk, ir.Egress, ir.TCP, flags, "10.0.1.2:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
				}
			}
		}, 2, func(t *testing.T, a Alert) {
			if a.Evidence.Scan != "tcp-syn" {
				t.Errorf("alert %+v", a)
			}
		}},
		{"a scan that goes on is reported again once it has doubled", func(e *Engine, clk *fakeClock) {
			for p := 1; p <= 100; p++ {
				e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.2:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
			}
			clk.t = clk.t.Add(2 * time.Second)
			e.Tick(clk.t)
			e.Tick(clk.t.Add(3 * time.Second)) // not grown since: nothing more
		}, 2, nil},
		{"busy client: many connections to a few ports, retries", func(e *Engine, clk *fakeClock) {
			for i := 0; i < 5000; i++ {
				port := []uint16{80, 443, 8080}[i%3]
				e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, netip.AddrPortFrom(netip.MustParseAddr("10.0.1.2"), uint16(30000+i%20000)).String(), netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), port).String()))
				clk.t = clk.t.Add(time.Millisecond)
			}
		}, 0, nil},
		{"slow scan below the window", func(e *Engine, clk *fakeClock) {
			for p := 1; p <= 30; p++ {
				e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.2:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
				clk.t = clk.t.Add(time.Minute)
				e.Tick(clk.t)
			}
		}, 0, nil},
		{"a remote pod's scan is its own node's to report", func(e *Engine, clk *fakeClock) {
			for p := 1; p <= 100; p++ {
				e.Observe(ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "10.0.2.2:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
			}
		}, 0, nil},
		{"an external source is the target node's to report", func(e *Engine, clk *fakeClock) {
			for p := 1; p <= 100; p++ {
				e.Observe(ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "172.16.0.7:40000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
			}
		}, 1, func(t *testing.T, a Alert) {
			if a.Source.IP != "172.16.0.7" || a.Source.Pod != "" || a.Target.Pod != "server" {
				t.Errorf("alert %+v", a)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, clk, _ := engine(t, portScanTD)
			tc.probe(e, clk)
			got := alertsOf(e, TypePortScan)
			if len(got) != tc.want {
				t.Fatalf("%d port-scan alerts, want %d: %+v", len(got), tc.want, got)
			}
			if tc.check != nil {
				tc.check(t, got[0])
			}
		})
	}
}

func TestPortScanBlockAndAllowlist(t *testing.T) {
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    portScan: {action: block, blockFor: 1m}
  allowlist:
  - {cidr: 172.16.9.0/24}
`
	e, clk, b := engine(t, td)
	for p := 1; p <= 20; p++ {
		e.Observe(ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "172.16.9.5:1000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
		e.Observe(ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "172.16.0.7:1000", netip.AddrPortFrom(netip.MustParseAddr("10.0.1.3"), uint16(p)).String()))
	}
	got := alertsOf(e, TypePortScan)
	if len(got) != 1 || got[0].Source.IP != "172.16.0.7" || got[0].Response != "block" {
		t.Fatalf("alerts %+v", got)
	}
	// The first configuration gave the kernel an empty list (replacing whatever a previous agent
	// left), the scan its one block.
	if len(b.got) != 2 || len(b.got[0]) != 0 || len(b.got[1]) != 1 || b.got[1][0] != netip.MustParsePrefix("172.16.0.7/32") {
		t.Fatalf("blocked %v", b.got)
	}
	clk.t = clk.t.Add(2 * time.Minute)
	e.Tick(clk.t)
	if last := b.got[len(b.got)-1]; len(last) != 0 {
		t.Fatalf("block not lifted after blockFor: %v", last)
	}
}

func TestHoneypot(t *testing.T) {
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  honeypots:
  - podSelector: {matchLabels: {decoy: "true"}}
    ports: [5432]
`
	e, clk, _ := engine(t, td)
	e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.2:1000", "10.0.1.9:80"))
	if n := len(alertsOf(e, TypeHoneypot)); n != 0 {
		t.Fatalf("a port the decoy does not watch raised %d alerts", n)
	}
	e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.2:1000", "10.0.1.9:5432"))
	e.Observe(ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "10.0.1.2:1000", "10.0.1.9:5432")) // the same attempt, seen on ingress
	got := alertsOf(e, TypeHoneypot)
	if len(got) != 1 || got[0].Source.Pod != "client" || got[0].Target.Pod != "db-0" {
		t.Fatalf("alerts %+v", got)
	}
}

func TestSynFlood(t *testing.T) {
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    synFlood: {action: alert, minRate: 200, sensitivity: 5}
`
	e, clk, _ := engine(t, td)
	second := func(rate int, src string) {
		for i := 0; i < rate; i++ {
			e.Observe(ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, netip.AddrPortFrom(netip.MustParseAddr(src), uint16(1024+i)).String(), "10.0.1.3:80"))
		}
		clk.t = clk.t.Add(time.Second)
		e.Tick(clk.t)
	}
	// A busy pod learns a high rate: 150/s is its normal, not a flood.
	for i := 0; i < 60; i++ {
		second(150, "10.0.1.2")
	}
	if n := len(alertsOf(e, TypeSynFlood)); n != 0 {
		t.Fatalf("steady load raised %d alerts", n)
	}
	second(400, "10.0.2.2") // above minRate but under 5x the learned 150/s
	if n := len(alertsOf(e, TypeSynFlood)); n != 0 {
		t.Fatalf("%d alerts under sensitivity", n)
	}
	second(5000, "10.0.2.2")
	got := alertsOf(e, TypeSynFlood)
	if len(got) != 1 || got[0].Target.Pod != "server" || got[0].Source.Pod != "remote" || got[0].Evidence.Rate < 4000 || got[0].Evidence.Baseline < 100 {
		t.Fatalf("alerts %+v", got)
	}
}

// TestSynFloodRateLimit: a flood puts a per-source SYN limit of the configured rate and burst
// on the flooded pod; the limit stays while its drops show the flood going on (and nothing is
// learned from those seconds), is lifted blockFor after the flood ends, and goes with the
// configuration.
func TestSynFloodRateLimit(t *testing.T) {
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    synFlood: {action: rateLimit, minRate: 200, perSource: 20, burst: 40, blockFor: 30s}
`
	e, clk, b := engine(t, td)
	second := func(rate int, limited bool) {
		for i := 0; i < rate; i++ {
			x := ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, netip.AddrPortFrom(netip.MustParseAddr("10.0.2.2"), uint16(1024+i)).String(), "10.0.1.3:80")
			x.Allowed = !limited
			if limited {
				x.Drop = flow.DropSynLimit
			}
			e.Observe(x)
		}
		clk.t = clk.t.Add(time.Second)
		e.Tick(clk.t)
	}
	for i := 0; i < 5; i++ {
		second(10, false)
	}
	if got := b.lastLimits(); len(got) != 0 {
		t.Fatalf("limits before any flood: %v", got)
	}
	second(3000, false)
	want := []dataplane.SynLimit{{Target: netip.MustParseAddr("10.0.1.3"), Rate: 20, Burst: 40}}
	if got := b.lastLimits(); !slices.Equal(got, want) {
		t.Fatalf("limits %v, want %v", got, want)
	}
	if a := alertsOf(e, TypeSynFlood); len(a) != 1 || a[0].Response != model.ActionRateLimit || a[0].Target.Pod != "server" {
		t.Fatalf("alerts %+v", a)
	}
	// Held down: the kernel reports a sample of its drops, under the flood threshold. The
	// limit stays well past blockFor, and the baseline learns nothing from those seconds.
	for i := 0; i < 60; i++ {
		second(50, true)
	}
	if got := b.lastLimits(); !slices.Equal(got, want) {
		t.Fatalf("limit lifted while the flood went on: %v", got)
	}
	if f := e.floods[netip.MustParseAddr("10.0.1.3")]; f == nil || f.baseline > 10 {
		t.Fatalf("baseline learned from the flood: %+v", f)
	}
	for i := 0; i < 31; i++ {
		second(0, false)
	}
	if got := b.lastLimits(); len(got) != 0 {
		t.Fatalf("limit not lifted blockFor after the flood: %v", got)
	}
	second(3000, false)
	if len(b.lastLimits()) != 1 {
		t.Fatal("a new flood is not limited again")
	}
	if err := e.Configure(cluster(t, ""), testProtected); err != nil {
		t.Fatal(err)
	}
	if got := b.lastLimits(); len(got) != 0 {
		t.Fatalf("limits outlive their configuration: %v", got)
	}
}

// TestQuarantine: an annotated pod is quarantined with or without a ThreatDefense, with DNS
// allowed by default or the configured ports; a decoy with action quarantine quarantines the pod
// that touched it until blockFor passes or the pod is released; a source that is no pod is
// blocked instead.
func TestQuarantine(t *testing.T) {
	withAnn := func(c *model.Cluster, pod string, ann map[string]string) *model.Cluster {
		c.Pods["app/"+pod].Annotations = ann
		return c
	}
	e, clk, b := engine(t, "")
	if got := b.lastQuarantine(); len(got) != 0 {
		t.Fatalf("quarantined %v before anything", got)
	}
	if err := e.Configure(withAnn(cluster(t, ""), "client", map[string]string{model.QuarantineAnnotation: "true"}), testProtected); err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("10.0.1.2")
	if got := b.quar[len(b.quar)-1]; !slices.Equal(got.Pods, []netip.Addr{client}) || len(got.Allow) != 2 || got.Allow[0] != (dataplane.PortProtocol{Protocol: ir.UDP, Port: 53}) {
		t.Fatalf("quarantine %+v", got)
	}
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  honeypots: [{namespace: app, pod: db-0, action: quarantine}]
  quarantine: {allow: [{protocol: TCP, port: 8443}]}
`
	if err := e.Configure(cluster(t, td), testProtected); err != nil {
		t.Fatal(err)
	}
	if got := b.quar[len(b.quar)-1]; len(got.Pods) != 0 || !slices.Equal(got.Allow, []dataplane.PortProtocol{{Protocol: ir.TCP, Port: 8443}}) {
		t.Fatalf("after the annotation went: %+v", got)
	}
	server := netip.MustParseAddr("10.0.1.3")
	e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.3:1000", "10.0.1.9:5432"))
	if got := b.lastQuarantine(); !slices.Equal(got, []netip.Addr{server}) {
		t.Fatalf("decoy touched: quarantined %v", got)
	}
	if a := alertsOf(e, TypeHoneypot); len(a) != 1 || a[0].Response != model.ActionQuarantine {
		t.Fatalf("alerts %+v", a)
	}
	// Released: the detector's quarantine goes.
	clk.t = clk.t.Add(time.Minute)
	rel := map[string]string{model.ReleasedAnnotation: clk.t.Format(time.RFC3339)}
	if err := e.Configure(withAnn(cluster(t, td), "server", rel), testProtected); err != nil {
		t.Fatal(err)
	}
	if got := b.lastQuarantine(); len(got) != 0 {
		t.Fatalf("released pod still quarantined: %v", got)
	}
	// Its kernel answering the decoy's retransmitted SYN-ACK with a RST is no new attempt.
	clk.t = clk.t.Add(time.Second)
	e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagRST, "10.0.1.3:1000", "10.0.1.9:5432"))
	e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagRST|flow.FlagACK, "10.0.1.3:1000", "10.0.1.9:5432"))
	if got := b.lastQuarantine(); len(got) != 0 {
		t.Fatalf("a RST to the decoy after the release quarantined again: %v", got)
	}
	// Touched again after the release: quarantined again, lifted after blockFor.
	clk.t = clk.t.Add(2 * time.Minute)
	e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.3:1001", "10.0.1.9:5432"))
	if got := b.lastQuarantine(); !slices.Equal(got, []netip.Addr{server}) {
		t.Fatalf("touched after release: quarantined %v", got)
	}
	clk.t = clk.t.Add(model.DefaultBlockFor)
	e.Tick(clk.t)
	if got := b.lastQuarantine(); len(got) != 0 {
		t.Fatalf("quarantine not lifted after blockFor: %v", got)
	}
	// An address that is no pod is blocked instead.
	e.Observe(ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "203.0.113.9:1000", "10.0.1.9:5432"))
	if a := alertsOf(e, TypeHoneypot); a[len(a)-1].Response != model.ActionBlock || len(b.got) == 0 || !slices.Contains(b.got[len(b.got)-1], netip.MustParsePrefix("203.0.113.9/32")) {
		t.Fatalf("external source: %+v, blocked %v", a[len(a)-1], b.got)
	}
}

// TestShields: the sack-panic shield covers the pods its selectors pick, and a shield's drop
// (reported by the target's node, whoever sent it) raises a shield alert.
func TestShields(t *testing.T) {
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  shields: [{name: sack-panic, selector: {matchLabels: {role: server}}}]
`
	e, clk, b := engine(t, td)
	if len(b.shields) == 0 || !slices.Equal(b.shields[len(b.shields)-1].Pods, []netip.Addr{netip.MustParseAddr("10.0.1.3")}) || b.shields[len(b.shields)-1].Min != SackPanicMinMSS {
		t.Fatalf("shields %+v", b.shields)
	}
	x := ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "10.0.2.2:1000", "10.0.1.3:80")
	x.Allowed, x.Drop = false, flow.DropShield
	e.Observe(x)
	a := alertsOf(e, TypeShield)
	if len(a) != 1 || a[0].Source.Pod != "remote" || a[0].Target.Pod != "server" || a[0].Response != "drop" {
		t.Fatalf("alerts %+v", a)
	}
	if err := e.Configure(cluster(t, portScanTD), testProtected); err != nil {
		t.Fatal(err)
	}
	if last := b.shields[len(b.shields)-1]; len(last.Pods) != 0 || last.Min != 0 {
		t.Fatalf("shield outlives its configuration: %+v", last)
	}
}

// TestConnectionLimitShield: the shield caps the selected pods' open connections per source
// (ConnLimiter) and their new ones per source (a SYN limit), recounts every few seconds while
// in force, alerts on its drops, and goes with its configuration.
func TestConnectionLimitShield(t *testing.T) {
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  shields:
  - {name: connection-limit, selector: {matchLabels: {role: server}}, connectionLimit: {concurrent: 3, perSecond: 5}}
  - {name: connection-limit}
`
	e, clk, b := engine(t, td)
	server, db := netip.MustParseAddr("10.0.1.3"), netip.MustParseAddr("10.0.1.9")
	caps := map[netip.Addr]uint32{}
	for _, c := range b.conns[len(b.conns)-1] {
		caps[c.Target] = c.Max
	}
	// The first shield selecting a pod sets its limits; the second covers the others with the
	// defaults.
	if caps[server] != 3 || caps[db] != model.DefaultConcurrentConnections || len(caps) != 4 {
		t.Fatalf("connection caps %v", caps)
	}
	rates := map[netip.Addr]dataplane.SynLimit{}
	for _, l := range b.lastLimits() {
		rates[l.Target] = l
	}
	if r := rates[server]; r.Rate != 5 || r.Burst != 10 {
		t.Fatalf("server's rate %+v, want 5/s burst 10", r)
	}
	if r := rates[db]; r.Rate != model.DefaultConnectionsPerSecond || r.Burst != 2*model.DefaultConnectionsPerSecond {
		t.Fatalf("db's rate %+v", r)
	}
	e.Tick(clk.t)
	clk.t = clk.t.Add(time.Second)
	e.Tick(clk.t)
	if b.recounts != 1 {
		t.Fatalf("%d recounts in a second, want 1", b.recounts)
	}
	clk.t = clk.t.Add(RecountEvery)
	e.Tick(clk.t)
	if b.recounts != 2 {
		t.Fatalf("%d recounts after %v, want 2", b.recounts, RecountEvery)
	}
	x := ev(clk, ir.Ingress, ir.TCP, flow.FlagSYN, "10.0.2.2:1000", "10.0.1.3:80")
	x.Allowed, x.Drop = false, flow.DropConnLimit
	e.Observe(x)
	a := alertsOf(e, TypeShield)
	if len(a) != 1 || a[0].Source.Pod != "remote" || a[0].Target.Pod != "server" || !strings.Contains(a[0].Message, "holds 3 open TCP connections") {
		t.Fatalf("alerts %+v", a)
	}
	if err := e.Configure(cluster(t, portScanTD), testProtected); err != nil {
		t.Fatal(err)
	}
	if last := b.conns[len(b.conns)-1]; len(last) != 0 || len(b.lastLimits()) != 0 {
		t.Fatalf("the shield outlives its configuration: caps %v, rates %v", last, b.lastLimits())
	}
}

func TestFeeds(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.netset")
	if err := os.WriteFile(list, []byte("# FireHOL style\n10.0.1.3\n203.0.113.0/24\n0.0.0.0/0\n10.0.0.0/8\n192.168.0.0/24\n2001:db8::/32\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  feeds:
  - {name: blocklist-a, file: ` + list + `, format: netset, action: block}
`
	e, clk, b := engine(t, td)
	if got := e.FeedEntries()["blocklist-a"]; got != 2 {
		t.Fatalf("%d entries loaded, want 2 (three refused, one IPv6 skipped)", got)
	}
	if r := e.Refused(); len(r) != 3 {
		t.Fatalf("refused %v", r)
	}
	if len(b.got) != 1 || len(b.got[0]) != 2 {
		t.Fatalf("kernel given %v", b.got)
	}
	e.Observe(ev(clk, ir.Egress, ir.TCP, flow.FlagSYN, "10.0.1.2:1000", "10.0.1.3:80"))
	got := alertsOf(e, TypeThreatFeed)
	if len(got) != 1 || got[0].Feed != "blocklist-a" || got[0].Target.Pod != "server" || got[0].Response != "block" {
		t.Fatalf("alerts %+v", got)
	}
	// A broken feed keeps the previous configuration.
	if err := os.WriteFile(list, []byte("not-an-address\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := cluster(t, td)
	c.ThreatDefense.Generation = 2 // applied again: feeds are read again
	if err := e.Configure(c, testProtected); err == nil || !strings.Contains(err.Error(), "spec.feeds[0]") || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("err %v", err)
	}
	if got := e.FeedEntries()["blocklist-a"]; got != 2 {
		t.Fatalf("previous feed not kept: %d entries", got)
	}
}

// A feed by URL (a server on loopback): read at configuration, read again at refresh with a
// conditional request (an unchanged list is not sent again), a changed list replaces the
// entries, and a failing server keeps the entries in force.
func TestFeedByURL(t *testing.T) {
	var mu sync.Mutex
	body, etag, status, requests, notModified := "203.0.113.0/24\n", `"v1"`, http.StatusOK, 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		requests++
		if status != http.StatusOK {
			w.WriteHeader(status)
			return
		}
		if r.Header.Get("If-None-Match") == etag {
			notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	td := `
apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  feeds:
  - {name: remote, url: "` + srv.URL + `/drop.txt", action: block, refresh: 1m}
`
	e, clk, b := engine(t, td)
	// Configure (the agent's sync) does not wait on the network: the first tick fetches.
	mu.Lock()
	fetched := requests
	mu.Unlock()
	if got := e.FeedEntries()["remote"]; got != 0 || fetched != 0 {
		t.Fatalf("fetched in Configure: %d entries, %d requests", got, fetched)
	}
	if err := e.RefreshFeeds(clk.t); err != nil {
		t.Fatal(err)
	}
	if got := e.FeedEntries()["remote"]; got != 1 || len(b.got) == 0 || len(b.got[len(b.got)-1]) != 1 {
		t.Fatalf("entries %d, kernel given %v", got, b.got)
	}
	refresh := func() error {
		t.Helper()
		clk.t = clk.t.Add(61 * time.Second)
		return e.RefreshFeeds(clk.t)
	}
	if err := refresh(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if requests != 2 || notModified != 1 {
		t.Errorf("%d requests, %d not modified; want 2 and 1", requests, notModified)
	}
	body, etag = "203.0.113.0/24\n198.51.100.7\n", `"v2"`
	mu.Unlock()
	if err := refresh(); err != nil {
		t.Fatal(err)
	}
	if got := e.FeedEntries()["remote"]; got != 2 {
		t.Fatalf("after the list changed: %d entries, want 2", got)
	}
	mu.Lock()
	status = http.StatusServiceUnavailable
	mu.Unlock()
	if err := refresh(); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "stay in force") {
		t.Fatalf("refresh from a failing server: %v", err)
	}
	if got := e.FeedEntries()["remote"]; got != 2 {
		t.Fatalf("entries lost when the server failed: %d", got)
	}
	// Applied again while the server fails: the entries last fetched stay, and the fetch is
	// retried every pendingRetry (not at every tick) until it succeeds.
	c := cluster(t, td)
	c.ThreatDefense.Generation = 2
	if err := e.Configure(c, testProtected); err != nil {
		t.Fatal(err)
	}
	if got := e.FeedEntries()["remote"]; got != 2 {
		t.Fatalf("re-applied: %d entries, want the 2 last fetched", got)
	}
	mu.Lock()
	before := requests
	mu.Unlock()
	for i := 0; i < 10; i++ { // 5 s of ticks: one attempt
		_ = e.RefreshFeeds(clk.t)
		clk.t = clk.t.Add(TickInterval)
	}
	mu.Lock()
	if requests-before != 1 {
		t.Errorf("%d fetch attempts in 5 s of ticks, want 1", requests-before)
	}
	status = http.StatusOK
	mu.Unlock()
	clk.t = clk.t.Add(pendingRetry)
	if err := e.RefreshFeeds(clk.t); err != nil {
		t.Fatalf("retry once the server is back: %v", err)
	}
}

func TestParseFeedSpamhaus(t *testing.T) {
	ps, _, err := ParseFeed(strings.NewReader("; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n1.19.0.0/16 ; SBL434604\n"), model.FormatSpamhaus)
	if err != nil || len(ps) != 2 || ps[1] != netip.MustParsePrefix("1.19.0.0/16") {
		t.Fatalf("%v %v", ps, err)
	}
}

// TestIndexFollowsObjects: a source hands pods over again as the same objects (an informer's
// cache) or as new ones; the engine's index reuses what it can and still sees every change: a
// pod annotated, the same objects again, the annotation gone, a pod removed.
func TestIndexFollowsObjects(t *testing.T) {
	e, _, b := engine(t, "")
	c := cluster(t, "")
	if err := e.Configure(c, testProtected); err != nil {
		t.Fatal(err)
	}
	next := func(c *model.Cluster) *model.Cluster {
		n := *c
		n.Pods, n.Namespaces = maps.Clone(c.Pods), maps.Clone(c.Namespaces)
		return &n
	}
	client := netip.MustParseAddr("10.0.1.2")
	c = next(c)
	p := c.Pods["app/client"].DeepCopy()
	p.Annotations = map[string]string{model.QuarantineAnnotation: "true"}
	c.Pods["app/client"] = p
	for i, step := range []struct {
		c    *model.Cluster
		want []netip.Addr
	}{
		{c, []netip.Addr{client}},
		{next(c), []netip.Addr{client}}, // the same objects
		{func() *model.Cluster {
			n := next(c)
			n.Pods["app/client"] = cluster(t, "").Pods["app/client"]
			return n
		}(), nil},
		{func() *model.Cluster { n := next(c); delete(n.Pods, "app/client"); return n }(), nil},
	} {
		if err := e.Configure(step.c, testProtected); err != nil {
			t.Fatal(err)
		}
		if got := b.lastQuarantine(); !slices.Equal(got, step.want) {
			t.Fatalf("step %d: quarantined %v, want %v", i, got, step.want)
		}
		if got := e.Quarantined(); len(got) != len(step.want) {
			t.Fatalf("step %d: Quarantined() %v", i, got)
		}
	}
}
