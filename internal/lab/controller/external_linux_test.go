package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
	"github.com/rampart-sec/rampart/internal/model"
)

// externalCluster: web (node-1) and remote, guarded (node-2) behind Services of every type that
// reaches them from outside. guarded admits only the external client's own address.
const externalCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}, {containerPort: 82, protocol: SCTP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: x, labels: {app: remote}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: guarded, namespace: x, labels: {app: guarded}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
spec: {nodeName: node-1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: x}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: guarded-from-outside, namespace: x}
spec:
  podSelector: {matchLabels: {app: guarded}}
  ingress: [{from: [{ipBlock: {cidr: 172.30.0.250/32}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: x}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: tcp, port: 80, nodePort: 30080}, {name: udp, port: 81, protocol: UDP, nodePort: 30081}, {name: sctp, port: 82, protocol: SCTP, nodePort: 30082}]
---
apiVersion: v1
kind: Service
metadata: {name: remote-lb, namespace: x}
spec:
  type: LoadBalancer
  selector: {app: remote}
  ports: [{name: tcp, port: 80, nodePort: 30180}, {name: udp, port: 81, protocol: UDP, nodePort: 30181}]
status: {loadBalancer: {ingress: [{ip: 172.30.1.10}]}}
---
apiVersion: v1
kind: Service
metadata: {name: guarded-local, namespace: x}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 31000
  selector: {app: guarded}
  ports: [{port: 80, targetPort: 8080, nodePort: 30280}]
status: {loadBalancer: {ingress: [{ip: 172.30.1.20}]}}
---
apiVersion: v1
kind: Service
metadata: {name: guarded-cluster, namespace: x}
spec:
  type: NodePort
  selector: {app: guarded}
  ports: [{port: 80, targetPort: 8080, nodePort: 30380}]
---
apiVersion: v1
kind: Service
metadata: {name: web-ext, namespace: x}
spec:
  selector: {app: web}
  externalIPs: [203.0.113.10]
  ports: [{port: 8000, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: empty-lb, namespace: x}
spec:
  type: LoadBalancer
  selector: {app: nothing}
  ports: [{name: tcp, port: 80, nodePort: 30580}, {name: udp, port: 81, protocol: UDP, nodePort: 30581}]
status: {loadBalancer: {ingress: [{ip: 172.30.1.30}]}}
---
apiVersion: v1
kind: Service
metadata: {name: empty-np, namespace: x}
spec:
  type: NodePort
  selector: {app: nothing}
  ports: [{name: tcp, port: 80, nodePort: 30480}, {name: udp, port: 81, protocol: UDP, nodePort: 30481}]
`

// TestLabExternalServices: node ports, load-balancer and external addresses reached from the
// external client (outside the cluster) and from pods, on both dataplanes: the backend that
// answers, the client address it sees (the client's own with externalTrafficPolicy Local or a
// local backend, the node's when the traffic was sent on to another node), policy decided on
// the backend with that address, and refusal without endpoints.
func TestLabExternalServices(t *testing.T) {
	node1, node2, ext := controller.NodeIP(0).String(), controller.NodeIP(1).String(), controller.ExternalClient.String()
	cases := []externalCase{
		{"node port, local backend", "external", node1, 30080, "TCP", "x/web", ext, ""},
		{"node port, backend on the other node", "external", node2, 30080, "TCP", "x/web", node2, ""},
		{"node port UDP, backend on the other node", "external", node2, 30081, "UDP", "x/web", node2, ""},
		// SCTP probes (raw INIT, INIT-ACK) learn no server name: "any" answer will do.
		{"node port SCTP, local backend", "external", node1, 30082, "SCTP", "any", "", ""},
		{"node port SCTP, backend on the other node", "external", node2, 30082, "SCTP", "any", "", ""},
		{"load balancer, Cluster", "external", "172.30.1.10", 80, "TCP", "x/remote", node1, ""},
		{"load balancer UDP, Cluster", "external", "172.30.1.10", 81, "UDP", "x/remote", node1, ""},
		{"load balancer, Local", "external", "172.30.1.20", 80, "TCP", "x/guarded", ext, ""},
		{"node port, Local, node with the endpoint", "external", node2, 30280, "TCP", "x/guarded", ext, ""},
		{"node port, Local, node without an endpoint", "external", node1, 30280, "TCP", "", "", "timeout"},
		{"node port, Cluster, policy sees the node", "external", node1, 30380, "TCP", "", "", ""},
		{"external IP", "external", "203.0.113.10", 8000, "TCP", "x/web", ext, ""},
		{"node port without endpoints", "external", node1, 30480, "TCP", "", "", "refused"},
		{"UDP node port without endpoints", "external", node1, 30481, "UDP", "", "", "refused"},
		{"load balancer without endpoints", "external", "172.30.1.30", 80, "TCP", "", "", "refused"},
		{"UDP load balancer without endpoints", "external", "172.30.1.30", 81, "UDP", "", "", "refused"},
		{"pod to load balancer", "x/client", "172.30.1.10", 80, "TCP", "x/remote", "", ""},
		{"pod to node port on its node", "x/client", node1, 30080, "TCP", "x/web", "", ""},
		{"pod to node port on the other node", "x/client", node2, 30180, "TCP", "x/remote", "", ""},
		{"pod to external IP", "x/client", "203.0.113.10", 8000, "UDP", "", "", ""},
		// kube-proxy's localhost node ports: the node's own sockets (a host-network pod's) reach
		// them on 127.0.0.1; a pod's loopback is its own. (eBPF: the lab's iptables NAT does
		// not serve them.)
		{"node to its node port on 127.0.0.1", "x/host", "127.0.0.1", 30080, "TCP", "x/web", "", "ebpf-only"},
		{"node to a UDP node port on 127.0.0.1", "x/host", "127.0.0.1", 30081, "UDP", "x/web", "", "ebpf-only"},
		{"pod to 127.0.0.1: its own loopback", "x/client", "127.0.0.1", 30080, "TCP", "", "", "refused"},
	}
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			runExternalCases(t, labtest.New(t, 2, dp, externalCluster), dp, cases, map[string]int{node1: 503, node2: 200})
		})
	}
}

// TestLabExternalServicesOneNode: the same Services on a 1-node lab, every endpoint local: the
// external client keeps its address through every frontend (so guarded admits it through its
// Cluster node port too), and the health check is healthy.
func TestLabExternalServicesOneNode(t *testing.T) {
	node1, ext := controller.NodeIP(0).String(), controller.ExternalClient.String()
	cases := []externalCase{
		{"node port", "external", node1, 30080, "TCP", "x/web", ext, ""},
		{"node port UDP", "external", node1, 30081, "UDP", "x/web", ext, ""},
		{"node port SCTP", "external", node1, 30082, "SCTP", "any", "", ""},
		{"load balancer, Cluster", "external", "172.30.1.10", 80, "TCP", "x/remote", ext, ""},
		{"load balancer UDP, Cluster", "external", "172.30.1.10", 81, "UDP", "x/remote", ext, ""},
		{"load balancer, Local", "external", "172.30.1.20", 80, "TCP", "x/guarded", ext, ""},
		{"node port, Local", "external", node1, 30280, "TCP", "x/guarded", ext, ""},
		{"node port, Cluster, local backend keeps the client", "external", node1, 30380, "TCP", "x/guarded", ext, ""},
		{"external IP", "external", "203.0.113.10", 8000, "TCP", "x/web", ext, ""},
		{"node port without endpoints", "external", node1, 30480, "TCP", "", "", "refused"},
		{"UDP node port without endpoints", "external", node1, 30481, "UDP", "", "", "refused"},
		{"load balancer without endpoints", "external", "172.30.1.30", 80, "TCP", "", "", "refused"},
		{"pod to load balancer", "x/client", "172.30.1.10", 80, "TCP", "x/remote", "", ""},
		{"pod to node port", "x/client", node1, 30080, "TCP", "x/web", "", ""},
		{"node to its node port on 127.0.0.1", "x/host", "127.0.0.1", 30080, "TCP", "x/web", "", "ebpf-only"},
		{"pod to 127.0.0.1: its own loopback", "x/client", "127.0.0.1", 30080, "TCP", "", "", "refused"},
	}
	oneNode := strings.ReplaceAll(externalCluster, "nodeName: node-2", "nodeName: node-1")
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			runExternalCases(t, labtest.New(t, 1, dp, oneNode), dp, cases, map[string]int{node1: 200})
		})
	}
}

// externalCase is one probe of the external Services tests and what it must show.
type externalCase struct {
	name, from, to string
	port           uint16
	proto          string
	server         string // "" when the probe must fail; "any" when it must connect
	client         string // the address the server must see ("" when not checked)
	failure        string // what a failure must say: "refused" (at once), "timeout" (dropped); "ebpf-only": a case for eBPF alone
}

// runExternalCases checks guarded-local's health-check node port on each node (the HTTP status
// wanted), probes every case, and checks that flow records name guarded-local for the
// external client.
func runExternalCases(t *testing.T, l labtest.Lab, dp string, cases []externalCase, health map[string]int) {
	ext := controller.ExternalClient.String()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The health-check node port of guarded-local answers as kube-proxy's: healthy
	// only on the node with its endpoint.
	err := l.Fabric.InExternal(func() error {
		for node, want := range health {
			body, code, err := httpGet(ctx, node+":31000")
			if err != nil || code != want || !strings.Contains(body, `"name":"guarded-local"`) ||
				!strings.Contains(body, fmt.Sprintf(`"localEndpoints":%d`, map[int]int{200: 1, 503: 0}[want])) {
				t.Errorf("health check on %s: %d %q %v, want %d", node, code, body, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.failure == "ebpf-only" && dp != "ebpf" {
			continue
		}
		// A probe starved on 2 cores, or sent before a neighbour answered, is retried.
		var got controller.Probe
		for try := 0; try < 3; try++ {
			res, err := l.Probe(ctx, controller.ProbeRequest{From: c.from, To: c.to, Port: c.port, Protocol: c.proto, Timeout: time.Second})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if len(res) != 1 {
				t.Fatalf("%s: %d probes, want 1", c.name, len(res))
			}
			got = res[0]
			if got.Connected == (c.server != "") {
				break
			}
		}
		desc := fmt.Sprintf("%s: %s -> %s:%d/%s", c.name, c.from, c.to, c.port, c.proto)
		switch {
		case c.server == "" && got.Connected:
			t.Errorf("%s: connected (answered by %s, client %s), want no connection", desc, got.Server, got.Client)
		case c.server != "" && !got.Connected:
			t.Errorf("%s: not connected (%s), want %s to answer", desc, got.Error, c.server)
		case c.server != "" && c.server != "any" && got.Server != c.server:
			t.Errorf("%s: answered by %s, want %s", desc, got.Server, c.server)
		case c.client != "" && !strings.HasPrefix(got.Client, c.client+":"):
			t.Errorf("%s: the server saw client %s, want %s", desc, got.Client, c.client)
		case c.failure == "refused" && (!strings.Contains(got.Error, "refused") || got.Ms > 900):
			t.Errorf("%s: %q after %.0f ms, want refused at once", desc, got.Error, got.Ms)
		case c.failure == "timeout" && !strings.Contains(got.Error, "timeout"):
			t.Errorf("%s: %q, want the packets dropped (a timeout)", desc, got.Error)
		}
	}
	// Flow records name the Service an outside client addressed, with its address.
	var named bool
	var recs []flow.Record
	for deadline := time.Now().Add(5 * time.Second); !named && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		recs = labFlows(t, l, "pod=x/guarded&verdict=allowed")
		for _, r := range recs {
			if s := r.Destination.Service; s != nil && s.Name == "guarded-local" && s.IP == "172.30.1.20" && r.Source.IP == ext {
				named = true
			}
		}
	}
	if !named {
		t.Errorf("no allowed record from %s naming Service guarded-local at 172.30.1.20: %+v", ext, recs)
	}
}

// httpGet fetches http://addr/ over a plain TCP connection (HTTP/1.0), retried while the
// connection fails (a listener being opened), and returns the body and status code.
func httpGet(ctx context.Context, addr string) (string, int, error) {
	var err error
	for try := 0; try < 20; try++ {
		var c net.Conn
		d := net.Dialer{Timeout: time.Second}
		if c, err = d.DialContext(ctx, "tcp4", addr); err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err = c.Write([]byte("GET / HTTP/1.0\r\nHost: " + addr + "\r\n\r\n")); err != nil {
			return "", 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", 0, err
		}
		b, err := io.ReadAll(resp.Body)
		return string(b), resp.StatusCode, err
	}
	return "", 0, err
}

const affinityCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: s1, namespace: x, labels: {app: s}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: s2, namespace: x, labels: {app: s}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: s3, namespace: x, labels: {app: s}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x}
spec: {nodeName: node-2, containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: x}
spec:
  type: NodePort
  sessionAffinity: ClientIP
  selector: {app: s}
  ports: [{name: tcp, port: 80, nodePort: 30080}, {name: udp, port: 81, protocol: UDP, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: x}
spec:
  type: NodePort
  selector: {app: s}
  ports: [{name: tcp, port: 80, nodePort: 30180}]
`

// TestLabSessionAffinity: with sessionAffinity ClientIP every connection of a client goes to
// the same backend, from a pod (its ClusterIP) and from outside (a node port), on TCP and UDP,
// on both dataplanes; without it, connections spread over the backends.
func TestLabSessionAffinity(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			l := labtest.New(t, 2, dp, affinityCluster)
			_, rs := l.Snapshot()
			vips := map[string]string{}
			for _, s := range rs.Services {
				vips[s.Name] = s.ClusterIPs[0].String()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			servers := func(from, to string, port uint16, proto string) map[string]int {
				seen := map[string]int{}
				for i := 0; i < 12; i++ {
					res, err := l.Probe(ctx, controller.ProbeRequest{From: from, To: to, Port: port, Protocol: proto, Timeout: time.Second})
					if err != nil || len(res) != 1 {
						t.Fatalf("probe %s -> %s:%d: %v %v", from, to, port, res, err)
					}
					if res[0].Connected {
						seen[res[0].Server]++
					}
				}
				return seen
			}
			node1 := controller.NodeIP(0).String()
			for _, c := range []struct {
				from, to string
				port     uint16
				proto    string
			}{
				{"x/client", vips["sticky"], 80, "TCP"},
				{"x/client", vips["sticky"], 81, "UDP"},
				{"external", node1, 30080, "TCP"},
				{"external", node1, 30081, "UDP"},
			} {
				if seen := servers(c.from, c.to, c.port, c.proto); len(seen) != 1 {
					t.Errorf("%s -> %s:%d/%s with affinity: answered by %v, want one backend every time", c.from, c.to, c.port, c.proto, seen)
				}
			}
			// 12 connections all to one of three backends by chance: (1/3)^11.
			if seen := servers("x/client", vips["spread"], 80, "TCP"); len(seen) < 2 {
				t.Errorf("without affinity: answered by %v, want connections spread", seen)
			}
			if seen := servers("external", node1, 30180, "TCP"); len(seen) < 2 {
				t.Errorf("without affinity, from outside: answered by %v, want connections spread", seen)
			}
		})
	}
}

const terminatingCluster = `apiVersion: v1
kind: Pod
metadata: {name: s1, namespace: default, labels: {app: s}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: s2, namespace: default, labels: {app: s}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec: {type: NodePort, selector: {app: s}, ports: [{port: 80, nodePort: 30080}]}
`

// TestLabTerminatingEndpoints: from outside, through a node port translated per packet, a held
// connection keeps its backend when that backend starts terminating (and its Service's
// backends change), new connections go to the ready one, and when every backend is
// terminating, they go to those still serving (kube-proxy's fallback).
func TestLabTerminatingEndpoints(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			l := labtest.New(t, 2, dp, terminatingCluster)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			node1 := controller.NodeIP(0).String()
			var conn net.Conn
			if err := l.Fabric.InExternal(func() error {
				var err error
				conn, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp4", node1+":30080")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			greeting, echo := labtest.Greeted(t, conn)
			held, _, _ := strings.Cut(greeting, " ")
			terminate := func(keys ...string) {
				err := l.Change(ctx, func(c *model.Cluster) error {
					for _, k := range keys {
						now := metav1.Now()
						c.Pods[k].DeletionTimestamp = &now
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			servers := func() map[string]int {
				seen := map[string]int{}
				for i := 0; i < 8; i++ {
					res, err := l.Probe(ctx, controller.ProbeRequest{From: "external", To: node1, Port: 30080, Timeout: time.Second})
					if err != nil || len(res) != 1 {
						t.Fatalf("probe: %v %v", res, err)
					}
					seen[res[0].Server]++
				}
				return seen
			}
			terminate(held)
			if err := echo("still there"); err != nil {
				t.Errorf("the connection held to %s, now terminating: %v", held, err)
			}
			if seen := servers(); len(seen) != 1 || seen[held] > 0 || seen[""] > 0 {
				t.Errorf("new connections with %s terminating: %v, want all to the other backend", held, seen)
			}
			terminate("default/s1", "default/s2")
			if seen := servers(); seen[""] > 0 || len(seen) != 2 {
				t.Errorf("new connections with every backend terminating: %v, want both still serving", seen)
			}
			if err := echo("still there"); err != nil {
				t.Errorf("the held connection after every backend began terminating: %v", err)
			}
		})
	}
}

const hairpinCluster = `apiVersion: v1
kind: Pod
metadata: {name: self, namespace: default, labels: {app: self}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: self, namespace: default}
spec: {selector: {app: self}, ports: [{port: 8080, targetPort: 80}]}
`

// TestLabHairpin: a pod reaches itself through its own Service from a process outside the
// lab's cgroups (lab exec), whose connections the eBPF dataplane translates per packet, not at
// connect time; on both dataplanes.
func TestLabHairpin(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			l := labtest.New(t, 1, dp, hairpinCluster)
			_, rs := l.Snapshot()
			vip := rs.Services[0].ClusterIPs[0]
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out []byte
			var err error
			for try := 0; try < 3; try++ {
				out, err = l.Fabric.Exec(ctx, "default", "self", []string{"timeout", "3", "bash", "-c",
					fmt.Sprintf("exec 3<>/dev/tcp/%s/8080 && head -n 1 <&3 && echo quit >&3", vip)})
				if err == nil && strings.HasPrefix(string(out), "default/self ") {
					break
				}
			}
			if err != nil || !strings.HasPrefix(string(out), "default/self ") {
				t.Fatalf("the pod through its own Service %s:8080: %v\n%s", vip, err, out)
			}
		})
	}
}
