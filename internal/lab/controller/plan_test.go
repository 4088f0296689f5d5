package controller

import (
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/model"
)

func TestPlace(t *testing.T) {
	objs, err := model.Decode(strings.NewReader(`apiVersion: v1
kind: Node
metadata: {name: worker, labels: {zone: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
status: {podIP: 10.9.9.9}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x}
spec: {nodeName: worker}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x}
status: {podIP: 10.9.9.9}
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: x}
spec: {hostNetwork: true, nodeName: node-2}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: x}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: t, namespace: x}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
`), "t", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := model.FromObjects(objs)
	if err := Place(c, 2); err != nil {
		t.Fatal(err)
	}
	if got := c.Nodes["worker"].Labels["zone"]; got != "a" {
		t.Errorf("declared node lost its labels")
	}
	if _, ok := c.Nodes["node-2"]; !ok {
		t.Fatalf("nodes: %v", model.SortedKeys(c.Nodes))
	}
	if ip := c.Pods["x/a"].Status.PodIP; ip != "10.9.9.9" {
		t.Errorf("declared pod IP not kept: %s", ip)
	}
	if ip := c.Pods["x/c"].Status.PodIP; ip == "10.9.9.9" || ip == "" {
		t.Errorf("duplicate declared IP kept or none assigned: %q", ip)
	}
	if n := c.Pods["x/b"].Spec.NodeName; n != "worker" {
		t.Errorf("x/b moved to %s", n)
	}
	if ip := c.Pods["x/h"].Status.PodIP; ip != NodeIP(0).String() && ip != NodeIP(1).String() {
		t.Errorf("host-network pod got %s, not its node's address", ip)
	}
	if s := c.Services["x/s"].Spec.ClusterIP; s != "10.96.0.2" {
		t.Errorf("service got ClusterIP %q, want the first free one 10.96.0.2", s)
	}
	// Placing again changes nothing.
	before := c.Pods["x/c"].Status.PodIP
	if err := Place(c, 2); err != nil {
		t.Fatal(err)
	}
	if after := c.Pods["x/c"].Status.PodIP; after != before {
		t.Errorf("re-placing moved x/c from %s to %s", before, after)
	}
	if err := Place(c, 1); err != nil || len(c.Nodes) != 2 {
		t.Errorf("placing with fewer nodes than declared: %v, %d nodes", err, len(c.Nodes))
	}
}

func TestStateRoundTrip(t *testing.T) {
	StateRoot = t.TempDir()
	objs, err := model.Load([]string{"../../../examples"}, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := model.FromObjects(objs)
	if err := Place(c, 2); err != nil {
		t.Fatal(err)
	}
	s := Settings{Name: "demo", Nodes: 2, Dataplane: "iptables"}
	if err := SaveState(s, c); err != nil {
		t.Fatal(err)
	}
	s2, c2, err := LoadState("demo")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := MarshalCluster(c)
	b, _ := MarshalCluster(c2)
	if s2 != s || string(a) != string(b) {
		t.Errorf("state changed in a round trip")
	}
}

// TestPlaceExposure: node ports, health-check node ports and load-balancer addresses are
// allocated as the API server and a load-balancer controller would, keeping declared ones and
// refusing a node port two Services claim.
func TestPlaceExposure(t *testing.T) {
	objs, err := model.Decode(strings.NewReader(`apiVersion: v1
kind: Service
metadata: {name: a, namespace: x}
spec: {type: NodePort, ports: [{name: p, port: 80}, {name: q, port: 81, nodePort: 30000}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: x}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: c, namespace: x}
spec: {type: LoadBalancer, ports: [{port: 80, nodePort: 30500}]}
status: {loadBalancer: {ingress: [{ip: 172.30.1.1}]}}
---
apiVersion: v1
kind: Service
metadata: {name: d, namespace: x}
spec: {ports: [{port: 80}]}
`), "t", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := model.FromObjects(objs)
	if err := Place(c, 1); err != nil {
		t.Fatal(err)
	}
	a, b, cc, d := c.Services["x/a"], c.Services["x/b"], c.Services["x/c"], c.Services["x/d"]
	if a.Spec.Ports[0].NodePort != 30001 || a.Spec.Ports[1].NodePort != 30000 {
		t.Errorf("a's node ports %d, %d; want 30001 (allocated), 30000 (declared)", a.Spec.Ports[0].NodePort, a.Spec.Ports[1].NodePort)
	}
	if b.Spec.Ports[0].NodePort != 30002 || b.Spec.HealthCheckNodePort != 30003 {
		t.Errorf("b's node port %d and health-check node port %d; want 30002, 30003", b.Spec.Ports[0].NodePort, b.Spec.HealthCheckNodePort)
	}
	if got := b.Status.LoadBalancer.Ingress; len(got) != 1 || got[0].IP != "172.30.1.2" {
		t.Errorf("b's load-balancer ingress %v, want 172.30.1.2 (172.30.1.1 is c's)", got)
	}
	if got := cc.Status.LoadBalancer.Ingress; len(got) != 1 || got[0].IP != "172.30.1.1" || cc.Spec.Ports[0].NodePort != 30500 {
		t.Errorf("c changed: %v, node port %d", got, cc.Spec.Ports[0].NodePort)
	}
	if d.Spec.Ports[0].NodePort != 0 || len(d.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("a ClusterIP Service got a node port or an address: %+v", d)
	}
	c.Services["x/c"].Spec.Ports[0].NodePort = 30000
	if err := Place(c, 1); err == nil || !strings.Contains(err.Error(), "node port 30000/TCP is already in use") {
		t.Errorf("a node port claimed twice: %v, want an error naming it", err)
	}
}
