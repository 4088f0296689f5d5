package compile_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
)

// TestServiceExposure: the fields kube-proxy reads reach the IR: node ports (only for NodePort
// and LoadBalancer), external and load-balancer addresses, traffic policies, affinity, each
// backend's node, and serving terminating endpoints from pods and from EndpointSlices.
func TestServiceExposure(t *testing.T) {
	const in = `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: a}, deletionTimestamp: "2026-01-01T00:00:00Z"}
spec: {nodeName: n2, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: x}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.1
  externalTrafficPolicy: Local
  healthCheckNodePort: 31000
  internalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  externalIPs: [203.0.113.1]
  selector: {app: a}
  ports: [{port: 80, targetPort: http, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 172.30.1.1}, {hostname: lb.example}]}}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: x}
spec:
  clusterIP: 10.96.0.2
  sessionAffinity: ClientIP
  ports: [{port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: plain-1, namespace: x, labels: {kubernetes.io/service-name: plain}}
addressType: IPv4
ports: [{port: 5353, protocol: UDP}]
endpoints:
- {addresses: [10.0.9.1], nodeName: n9, conditions: {ready: true}}
- {addresses: [10.0.9.2], conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.0.9.3], conditions: {ready: false, serving: false, terminating: true}}
- {addresses: [10.0.9.4], conditions: {ready: false}}
`
	objs, err := model.Decode(strings.NewReader(in), "in.yaml", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range rs.Services {
		var bs []string
		for _, b := range s.Ports[0].Backends {
			bs = append(bs, fmt.Sprintf("%s:%d@%s/term=%v", b.IP, b.Port, b.Node, b.Terminating))
		}
		got[s.Name] = fmt.Sprintf("ext=%v lb=%v etpLocal=%v itpLocal=%v affinity=%d hc=%d nodePort=%d backends=%v",
			s.ExternalIPs, s.LoadBalancerIPs, s.ExternalLocal, s.InternalLocal, s.AffinitySeconds, s.HealthCheckNodePort, s.Ports[0].NodePort, bs)
	}
	want := map[string]string{
		"lb":    "ext=[203.0.113.1] lb=[172.30.1.1] etpLocal=true itpLocal=true affinity=60 hc=31000 nodePort=30080 backends=[10.0.1.1:8080@n1/term=false 10.0.2.1:8080@n2/term=true]",
		"plain": "ext=[] lb=[] etpLocal=false itpLocal=false affinity=10800 hc=0 nodePort=0 backends=[10.0.9.1:5353@n9/term=false 10.0.9.2:5353@/term=true]",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s:\n got  %s\n want %s", k, got[k], w)
		}
	}
}

// TestTopologyHintsCompiled: backends carry their EndpointSlices' topology hints; a selector
// Service takes them from its slices where a controller wrote some, and otherwise, asking for
// a traffic distribution, gets those the EndpointSlice controller would write (none when an
// endpoint's node has no zone).
func TestTopologyHintsCompiled(t *testing.T) {
	const in = `apiVersion: v1
kind: Node
metadata: {name: n1, labels: {topology.kubernetes.io/zone: za}}
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {topology.kubernetes.io/zone: zb}}
---
apiVersion: v1
kind: Node
metadata: {name: n3}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: a}}
spec: {nodeName: n2, containers: [{name: c}]}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {app: c}}
spec: {nodeName: n3, containers: [{name: c}]}
status: {podIP: 10.0.3.1}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {app: c}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Service
metadata: {name: close, namespace: x}
spec: {clusterIP: 10.96.0.1, selector: {app: a}, trafficDistribution: PreferClose, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: same-node, namespace: x}
spec: {clusterIP: 10.96.0.2, selector: {app: a}, trafficDistribution: PreferSameNode, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: no-zone, namespace: x}
spec: {clusterIP: 10.96.0.3, selector: {app: c}, trafficDistribution: PreferClose, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: x}
spec: {clusterIP: 10.96.0.4, selector: {app: a}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: auto, namespace: x, annotations: {service.kubernetes.io/topology-mode: Auto}}
spec: {clusterIP: 10.96.0.5, selector: {app: a}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: auto-1, namespace: x, labels: {kubernetes.io/service-name: auto}}
addressType: IPv4
ports: [{port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.1.1], nodeName: n1, hints: {forZones: [{name: za}, {name: zc}]}}
- {addresses: [10.0.2.1], nodeName: n2, hints: {forZones: [{name: zb}]}}
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: x}
spec: {clusterIP: 10.96.0.6, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: external-1, namespace: x, labels: {kubernetes.io/service-name: external}}
addressType: IPv4
ports: [{port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.9.1], nodeName: n9, hints: {forZones: [{name: zb}], forNodes: [{name: n9}]}}
`
	objs, err := model.Decode(strings.NewReader(in), "in.yaml", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range rs.Services {
		var bs []string
		for _, b := range s.Ports[0].Backends {
			bs = append(bs, fmt.Sprintf("%s zones=%v nodes=%v", b.IP, b.ZoneHints, b.NodeHints))
		}
		got[s.Name] = strings.Join(bs, "; ")
	}
	want := map[string]string{
		"close":     "10.0.1.1 zones=[za] nodes=[]; 10.0.2.1 zones=[zb] nodes=[]",
		"same-node": "10.0.1.1 zones=[za] nodes=[n1]; 10.0.2.1 zones=[zb] nodes=[n2]",
		"no-zone":   "10.0.3.1 zones=[] nodes=[]; 10.0.1.2 zones=[] nodes=[]",
		"plain":     "10.0.1.1 zones=[] nodes=[]; 10.0.2.1 zones=[] nodes=[]",
		"auto":      "10.0.1.1 zones=[za zc] nodes=[]; 10.0.2.1 zones=[zb] nodes=[]",
		"external":  "10.0.9.1 zones=[zb] nodes=[n9]",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %s\n want %s", name, got[name], w)
		}
	}
	for _, n := range rs.Nodes {
		if want := map[string]string{"n1": "za", "n2": "zb"}[n.Name]; n.Zone != want {
			t.Errorf("node %s zone %q, want %q", n.Name, n.Zone, want)
		}
	}
}
