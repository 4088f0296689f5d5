package ctsweep

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/policy"
)

const cluster = `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {pod: c}}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80, protocol: UDP}]}]
`

func TestSweepRemovesOnlyDeniedConnections(t *testing.T) {
	ns := netnstest.New(t, "rt-ct")
	objs, err := model.Decode(strings.NewReader(cluster), "t", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	h, err := handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	add := func(src, dst, replySrc string, dport uint16) {
		f := &netlink.ConntrackFlow{FamilyType: netlink.FAMILY_V4, TimeOut: 100,
			Forward: netlink.IPTuple{SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4(), Protocol: 17, SrcPort: 40000, DstPort: dport},
			Reverse: netlink.IPTuple{SrcIP: net.ParseIP(replySrc).To4(), DstIP: net.ParseIP(src).To4(), Protocol: 17, SrcPort: dport, DstPort: 40000}}
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	add("10.0.0.2", "10.0.0.1", "10.0.0.1", 80)   // b -> a:80: allowed
	add("10.0.0.3", "10.0.0.1", "10.0.0.1", 80)   // c -> a:80: denied
	add("10.0.0.2", "10.96.0.1", "10.0.0.1", 81)  // b -> service -> a:81: denied after DNAT
	add("10.0.0.1", "10.0.0.3", "10.0.0.3", 5000) // a -> c: allowed (c is not isolated)

	n, err := Sweep(ns, policy.New(rs))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d entries, want 2", n)
	}
	left, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range left {
		got = append(got, f.Forward.SrcIP.String()+">"+f.Reverse.SrcIP.String())
	}
	if strings.Join(got, ",") != "10.0.0.2>10.0.0.1,10.0.0.1>10.0.0.3" && strings.Join(got, ",") != "10.0.0.1>10.0.0.3,10.0.0.2>10.0.0.1" {
		t.Errorf("remaining entries %v", got)
	}
}
