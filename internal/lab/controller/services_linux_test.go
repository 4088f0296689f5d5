package controller_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
)

const noEndpointsCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: x}
spec:
  selector: {pod: nothing}
  ports: [{name: tcp, port: 8080, targetPort: 80}, {name: udp, port: 8081, targetPort: 81, protocol: UDP}]
`

// TestLabServiceWithoutEndpoints: as with kube-proxy, a connection to a Service port without
// endpoints is refused at once (ECONNREFUSED) rather than left to time out, on TCP and on
// connected UDP, on both dataplanes (iptables: REJECT before policy; eBPF: the connect-time
// hook's refusal).
func TestLabServiceWithoutEndpoints(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			l := labtest.New(t, 1, dp, noEndpointsCluster)
			_, rs := l.Snapshot()
			var vip netip.Addr
			for _, s := range rs.Services {
				if s.Name == "empty" {
					vip = s.ClusterIPs[0]
				}
			}
			if !vip.IsValid() {
				t.Fatal("no ClusterIP for the Service")
			}
			err := l.Fabric.InPod("x", "a", func() error {
				start := time.Now()
				c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(vip, 8080).String(), 3*time.Second)
				if err == nil {
					c.Close()
					t.Errorf("TCP to %s:8080, a Service without endpoints, connected", vip)
				} else if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 2*time.Second {
					t.Errorf("TCP to %s:8080 without endpoints: %v after %v, want connection refused at once", vip, err, time.Since(start))
				}
				// Connected UDP: refused at connect (eBPF) or on the next read (ICMP port
				// unreachable); retried, as a datagram may go before the neighbour is resolved.
				start = time.Now()
				var uerr error
				for i := 0; i < 3 && !errors.Is(uerr, syscall.ECONNREFUSED); i++ {
					uerr = udpRoundTrip(netip.AddrPortFrom(vip, 8081))
				}
				if !errors.Is(uerr, syscall.ECONNREFUSED) {
					t.Errorf("UDP to %s:8081 without endpoints: %v after %v, want connection refused", vip, uerr, time.Since(start))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// From a process outside the lab's cgroups (lab exec), translated per packet on
			// the veth: refused too (eBPF: an ICMP port unreachable from the ClusterIP).
			out, _ := l.Fabric.Exec(context.Background(), "x", "a", []string{"timeout", "3", "bash", "-c",
				fmt.Sprintf("exec 3<>/dev/tcp/%s/8080", vip)})
			if !strings.Contains(string(out), "Connection refused") {
				t.Errorf("TCP to %s:8080 without endpoints, per packet: %q, want connection refused", vip, out)
			}
		})
	}
}

func udpRoundTrip(dst netip.AddrPort) error {
	c, err := net.Dial("udp4", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = c.Read(make([]byte, 16))
	return err
}

const topologyCluster = `apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {topology.kubernetes.io/zone: za}}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {topology.kubernetes.io/zone: zb}}
---
apiVersion: v1
kind: Pod
metadata: {name: s1, namespace: x, labels: {app: s}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: s2, namespace: x, labels: {app: s}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: s3, namespace: x, labels: {app: s}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c1, namespace: x, labels: {app: c}}
spec: {nodeName: node-1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c2, namespace: x, labels: {app: c}}
spec: {nodeName: node-2, containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: close, namespace: x}
spec: {type: NodePort, selector: {app: s}, trafficDistribution: PreferClose, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: x}
spec: {selector: {app: s}, ports: [{port: 80}]}
`

// TestLabTopologyHints: with trafficDistribution PreferClose, cluster-wide traffic stays in the
// client node's zone (the lab writes the hints the EndpointSlice controller would), from pods
// and from outside through a node port; without it, it spreads over every zone.
func TestLabTopologyHints(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			l := labtest.New(t, 2, dp, topologyCluster)
			_, rs := l.Snapshot()
			vips := map[string]string{}
			for _, s := range rs.Services {
				vips[s.Name] = s.ClusterIPs[0].String()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			servers := func(from, to string, port uint16, n int) map[string]int {
				seen := map[string]int{}
				for i := 0; i < n; i++ {
					res, err := l.Probe(ctx, controller.ProbeRequest{From: from, To: to, Port: port, Protocol: "TCP", Timeout: time.Second})
					if err != nil || len(res) != 1 {
						t.Fatalf("probe %s -> %s:%d: %v %v", from, to, port, res, err)
					}
					if !res[0].Connected {
						t.Fatalf("probe %s -> %s:%d did not connect: %+v", from, to, port, res[0])
					}
					seen[res[0].Server]++
				}
				return seen
			}
			check := func(what string, seen map[string]int, want ...string) {
				t.Helper()
				for s := range seen {
					if !slices.Contains(want, s) {
						t.Errorf("%s: answered by %v, want only %v", what, seen, want)
						return
					}
				}
			}
			check("from node-1 (zone za)", servers("x/c1", vips["close"], 80, 12), "x/s1")
			check("from node-2 (zone zb)", servers("x/c2", vips["close"], 80, 12), "x/s2", "x/s3")
			check("from outside through node-1's node port", servers("external", controller.NodeIP(0).String(), 30080, 12), "x/s1")
			check("from outside through node-2's node port", servers("external", controller.NodeIP(1).String(), 30080, 12), "x/s2", "x/s3")
			// 24 connections, all in one zone by chance: (2/3)^24 + (1/3)^24, under 1 in 10,000.
			seen := servers("x/c1", vips["spread"], 80, 24)
			if seen["x/s1"] == 0 || seen["x/s1"] == 24 {
				t.Errorf("without hints: answered by %v, want connections spread over both zones", seen)
			}
		})
	}
}
