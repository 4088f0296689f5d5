package ebpf_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
)

const lbCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}, {containerPort: 82, protocol: SCTP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}, {containerPort: 82, protocol: SCTP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: x, labels: {pod: h}}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, ports: [{containerPort: 9090}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h2, namespace: x, labels: {pod: h2}}
spec: {nodeName: node-2, hostNetwork: true, containers: [{name: c, ports: [{containerPort: 9091}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc-b, namespace: x}
spec:
  selector: {pod: b}
  ports: [{name: tcp, port: 8080, targetPort: 80}, {name: udp, port: 8081, targetPort: 81, protocol: UDP}, {name: sctp, port: 9082, targetPort: 82, protocol: SCTP}]
`

// TestConnectTimeLB checks Services balanced in the socket hooks: pods and host-network pods
// reach a Service's backend on TCP and UDP with the hooks doing the translation (SCTP, which
// the hooks do not see, goes through the veth and route programs), policy is decided on the
// backend, and an unconnected UDP socket's replies read as coming from the Service.
func TestConnectTimeLB(t *testing.T) {
	l := labtest.New(t, 2, "ebpf", lbCluster)
	ctx := context.Background()
	lb := l.SockLB()
	if lb == nil {
		t.Fatal("the eBPF lab has no connect-time load balancer")
	}
	_, rs := l.Snapshot()
	var vip netip.Addr
	for _, s := range rs.Services {
		if s.Name == "svc-b" {
			vip = s.ClusterIPs[0]
		}
	}
	before, err := lb.Counters()
	if err != nil {
		t.Fatal(err)
	}
	probes, err := l.Probe(ctx, controller.ProbeRequest{To: "x/b", Via: "service", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// From a pod and from host-network pods on the backend's node and on the other one, on
	// TCP, UDP and SCTP: the nodes' own SCTP packets are translated by the route program (the
	// backend's veth program or the uplink's reverses it), the rest by the socket hooks.
	if len(probes) != 9 {
		t.Fatalf("%d probes, want 9: %+v", len(probes), probes)
	}
	for _, p := range probes {
		if !p.Connected || p.Via != "service" {
			t.Errorf("%s -> %s %d/%s via %s: connected=%v", p.From, p.To, p.Port, p.Protocol, p.Via, p.Connected)
		}
		// SCTP's Service port differs from the pod's: the programs rewrite the port and fix
		// the CRC32c both ways (the lab's SCTP endpoints check it).
		if p.Protocol == "SCTP" && !strings.HasSuffix(p.Target, ":9082") {
			t.Errorf("%s -> %s SCTP probed %s, want the Service port 9082", p.From, p.To, p.Target)
		}
	}
	after, err := lb.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// Three clients, TCP and UDP each: six connects translated by the hooks.
	if got := after.Connect - before.Connect; got < 6 {
		t.Errorf("connect4 translated %d sockets, want at least 6", got)
	}

	// An unconnected UDP socket: sendmsg4 picks the backend, recvmsg4 shows the frontend.
	err = l.Fabric.InPod("x", "a", func() error {
		// The pod's sockets are made in the pod's own cgroup, below the lab's hooked one.
		cg, err := os.ReadFile("/proc/thread-self/cgroup")
		if err != nil {
			return err
		}
		if !strings.Contains(string(cg), "/lab-") || !strings.HasSuffix(strings.TrimSpace(string(cg)), "/x_a") {
			t.Errorf("pod x/a runs in cgroup %q, want the lab's x_a group", cg)
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.WriteToUDPAddrPort([]byte("ping"), netip.AddrPortFrom(vip, 8081)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		_, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if from != netip.AddrPortFrom(vip, 8081) {
			t.Errorf("reply came from %s, want the Service %s:8081", from, vip)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("unconnected UDP to the Service: %v", err)
	}
	final, err := lb.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if final.Sendmsg == after.Sendmsg || final.Recvmsg == after.Recvmsg {
		t.Errorf("sendmsg4/recvmsg4 did not translate: %+v -> %+v", after, final)
	}

	// Policy is decided on the backend: deny b's ingress and the Service is unreachable.
	if err := l.Apply(ctx, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress]}
`); err != nil {
		t.Fatal(err)
	}
	probes, err = l.Probe(ctx, controller.ProbeRequest{From: "x/a", To: "x/b", Via: "service", Timeout: 700 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probes {
		if p.Connected {
			t.Errorf("%s -> %s %d/%s connected through the Service despite the deny policy", p.From, p.To, p.Port, p.Protocol)
		}
	}
}
