package exposure

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

var manifests = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
` + pod("shop", "open", "10.244.0.10", "app: open") + pod("shop", "closed", "10.244.0.11", "app: closed") +
	pod("shop", "internal", "10.244.0.12", "app: internal") + pod("shop", "lb", "10.244.0.13", "app: lb") +
	pod("shop", "public", "10.244.0.14", "app: public") + pod("other", "client", "10.244.0.20", "app: client") +
	pod("shop", "pair", "10.244.0.15", "app: pair") + `
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: bare, labels: {app: bare}}
spec: {containers: [{name: c, image: shop/bare:1.0}]}
status: {podIP: 10.244.0.16}
---
apiVersion: v1
kind: Service
metadata: {namespace: shop, name: bare}
spec: {clusterIP: 10.96.0.16, selector: {app: bare}, ports: [{port: 443, targetPort: 8443}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: deny-closed}
spec: {podSelector: {matchLabels: {app: closed}}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: internal}
spec:
  podSelector: {matchLabels: {app: internal}}
  ingress: [{from: [{namespaceSelector: {}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: lb}
spec:
  podSelector: {matchLabels: {app: lb}}
  ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: public}
spec:
  podSelector: {matchLabels: {app: public}}
  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}], ports: [{port: 8080}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: pair}
spec:
  podSelector: {matchLabels: {app: pair}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}}]}]
`

func pod(ns, name, ip, labels string) string {
	return `apiVersion: v1
kind: Pod
metadata: {namespace: ` + ns + `, name: ` + name + `, labels: {` + labels + `}}
spec: {containers: [{name: c, image: shop/web:1.0, ports: [{containerPort: 8080}, {containerPort: 9090}]}]}
status: {podIP: ` + ip + `}
---
`
}

func analyzer(t *testing.T) *Analyzer {
	t.Helper()
	objs, err := model.Decode(strings.NewReader(manifests), "test.yaml", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	return New(policy.New(rs))
}

func TestExposureClasses(t *testing.T) {
	a := analyzer(t)
	tests := []struct {
		pod       string
		class     Class
		port8080  Class
		addresses []string
		fromPods  []string
		because   string
	}{
		{"shop/open", Internet, Internet, []string{"0.0.0.0/0"}, nil, "no policy restricts it"},
		{"shop/closed", None, None, nil, nil, "isolated for ingress by NetworkPolicy, and no rule allows it"},
		{"shop/internal", Cluster, Cluster, nil, nil, "ingress allowed by rule 0 of NetworkPolicy shop/internal"},
		{"shop/lb", External, External, []string{"192.168.0.0/24", "192.168.2.0/23", "192.168.4.0/22", "192.168.8.0/21", "192.168.16.0/20", "192.168.32.0/19", "192.168.64.0/18", "192.168.128.0/17"}, nil, "ingress allowed by rule 0 of NetworkPolicy shop/lb"},
		{"shop/public", Internet, Internet, []string{"0.0.0.0/5", "8.0.0.0/7", "11.0.0.0/8", "12.0.0.0/6", "16.0.0.0/4", "32.0.0.0/3", "64.0.0.0/2", "128.0.0.0/1"}, nil, "ingress allowed by rule 0 of NetworkPolicy shop/public"},
		{"shop/pair", Pods, Pods, nil, []string{"other/client"}, "ingress allowed by rule 0 of NetworkPolicy shop/pair"},
	}
	for _, tc := range tests {
		t.Run(tc.pod, func(t *testing.T) {
			e, ok := a.Of(tc.pod)
			if !ok {
				t.Fatal("pod not found")
			}
			if e.Class != tc.class {
				t.Errorf("class = %s, want %s", e.Class, tc.class)
			}
			p := e.Ports[0]
			if p.Port != 8080 || p.Class != tc.port8080 || p.Because != tc.because {
				t.Errorf("8080: %+v, want class %s because %q", p, tc.port8080, tc.because)
			}
			if !reflect.DeepEqual(p.FromAddresses, tc.addresses) {
				t.Errorf("fromAddresses = %q, want %q", p.FromAddresses, tc.addresses)
			}
			if !reflect.DeepEqual(p.FromPods, tc.fromPods) {
				t.Errorf("fromPods = %q, want %q", p.FromPods, tc.fromPods)
			}
			if p.PodsTotal != 7 {
				t.Errorf("podsTotal = %d, want 7", p.PodsTotal)
			}
		})
	}
	// A pod that declares no ports: the ports its Services send to.
	if e, _ := a.Of("shop/bare"); e.PortsFrom != "services" || len(e.Ports) != 1 || e.Ports[0].Port != 8443 || e.Class != Internet {
		t.Errorf("shop/bare = %+v, want 8443/TCP from its Service, internet", e)
	}
	// The public policy opens 8080 only: 9090 is isolated.
	if e, _ := a.Of("shop/public"); e.Ports[1].Port != 9090 || e.Ports[1].Class != None {
		t.Errorf("shop/public 9090 = %+v, want none", e.Ports[1])
	}
}

func TestRangePrefixes(t *testing.T) {
	a := partitionSpans(t, "10.0.0.0", "10.0.0.255")
	if !reflect.DeepEqual(a, []string{"10.0.0.0/24"}) {
		t.Errorf("got %v", a)
	}
	b := partitionSpans(t, "10.0.0.1", "10.0.0.6")
	if !reflect.DeepEqual(b, []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}) {
		t.Errorf("got %v", b)
	}
}

func partitionSpans(t *testing.T, lo, hi string) []string {
	t.Helper()
	var out []string
	for _, p := range rangePrefixes(netip.MustParseAddr(lo), netip.MustParseAddr(hi)) {
		out = append(out, p.String())
	}
	return out
}
