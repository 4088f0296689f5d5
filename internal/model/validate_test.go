package model

import (
	"strings"
	"testing"
)

func decodeString(s string) ([]Object, error) {
	return Decode(strings.NewReader(s), "in.yaml", DecodeOptions{})
}

func TestValidationErrors(t *testing.T) {
	np := func(spec string) string {
		return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n" + spec
	}
	svc := func(spec string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec:\n" + spec
	}
	anp := func(spec string) string {
		return "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\nspec:\n" + spec
	}
	tests := []struct {
		name string
		in   string
		want []string // substrings, each must appear in the error text
	}{
		{"invalid cidr", np("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]"),
			[]string{"NetworkPolicy x/p", "spec.ingress[0].from[0].ipBlock.cidr", "valid CIDR"}},
		{"except equal to cidr", np("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]"),
			[]string{"spec.egress[0].to[0].ipBlock.except[0]", "strict subset"}},
		{"except outside cidr", np("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]"),
			[]string{"except[0]", "strict subset"}},
		{"staged value", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x, annotations: {rampart.io/staged: \"yes\"}}\nspec: {podSelector: {}}",
			[]string{"NetworkPolicy x/p", "metadata.annotations[rampart.io/staged]", `"true"`}},
		{"staged pod", "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x, annotations: {rampart.io/staged: \"true\"}}\nspec: {containers: [{name: c}]}",
			[]string{"metadata.annotations[rampart.io/staged]", "only NetworkPolicy"}},
		{"port out of range", np("  podSelector: {}\n  ingress: [{ports: [{port: 70000}]}]"),
			[]string{"spec.ingress[0].ports[0].port", "between 1 and 65535"}},
		{"endPort without port", np("  podSelector: {}\n  ingress: [{ports: [{endPort: 90}]}]"),
			[]string{"endPort", "not specified"}},
		{"endPort with named port", np("  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 90}]}]"),
			[]string{"endPort", "non-numeric"}},
		{"endPort below port", np("  podSelector: {}\n  ingress: [{ports: [{port: 100, endPort: 90}]}]"),
			[]string{"endPort", "greater than or equal"}},
		{"bad protocol", np("  podSelector: {}\n  ingress: [{ports: [{port: 1, protocol: ICMP}]}]"),
			[]string{"protocol", "Unsupported value"}},
		{"bad port name", np("  podSelector: {}\n  ingress: [{ports: [{port: Not_A_Name}]}]"),
			[]string{"ports[0].port"}},
		{"selector operator needs values", np("  podSelector: {matchExpressions: [{key: a, operator: In}]}"),
			[]string{"spec.podSelector.matchExpressions[0].values"}},
		{"selector unknown operator", np("  podSelector: {matchExpressions: [{key: a, operator: Near, values: [b]}]}"),
			[]string{"spec.podSelector.matchExpressions[0].operator"}},
		{"selector bad label value", np("  podSelector: {matchLabels: {a: 'has space'}}"),
			[]string{"spec.podSelector.matchLabels"}},
		{"empty peer", np("  podSelector: {}\n  ingress: [{from: [{}]}]"),
			[]string{"spec.ingress[0].from[0]", "must specify a peer"}},
		{"ipBlock with selector", np("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]"),
			[]string{"may not specify both ipBlock and another peer"}},
		{"policyTypes", np("  podSelector: {}\n  policyTypes: [Ingress, Sideways]"),
			[]string{"spec.policyTypes[1]", "Sideways"}},
		{"unknown field", np("  podSelector: {}\n  ingres: []"), []string{`unknown field "spec.ingres"`}},
		{"service type", svc("  type: Magic\n  ports: [{port: 80}]"), []string{"Service x/s", "spec.type", "Magic"}},
		{"nodePort on ClusterIP", svc("  ports: [{port: 80, nodePort: 30080}]"), []string{"spec.ports[0].nodePort", "may not be used"}},
		{"nodePort out of range", svc("  type: NodePort\n  ports: [{port: 80, nodePort: 70000}]"), []string{"spec.ports[0].nodePort", "between 1 and 65535"}},
		{"nodePort twice", svc("  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]"), []string{"spec.ports[1].nodePort", "Duplicate"}},
		{"externalIP", svc("  externalIPs: [1.2.3]\n  ports: [{port: 80}]"), []string{"spec.externalIPs[0]"}},
		{"externalTrafficPolicy value", svc("  type: NodePort\n  externalTrafficPolicy: Nearby\n  ports: [{port: 80}]"), []string{"spec.externalTrafficPolicy", "Nearby"}},
		{"externalTrafficPolicy on ClusterIP", svc("  externalTrafficPolicy: Local\n  ports: [{port: 80}]"), []string{"spec.externalTrafficPolicy", "NodePort or LoadBalancer"}},
		{"internalTrafficPolicy value", svc("  internalTrafficPolicy: Nearby\n  ports: [{port: 80}]"), []string{"spec.internalTrafficPolicy"}},
		{"affinity value", svc("  sessionAffinity: Cookie\n  ports: [{port: 80}]"), []string{"spec.sessionAffinity", "Cookie"}},
		{"affinity timeout", svc("  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 90000}}\n  ports: [{port: 80}]"),
			[]string{"spec.sessionAffinityConfig.clientIP.timeoutSeconds", "86400"}},
		{"load-balancer ingress", "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 300.1.1.1}]}}",
			[]string{"status.loadBalancer.ingress[0].ip"}},
		{"duplicate field", np("  podSelector: {}\n  podSelector: {}"), []string{"podSelector"}},
		{"malformed yaml", "kind: [", []string{"in.yaml (document 1)", "malformed YAML"}},
		{"unsupported kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}", []string{"unsupported kind"}},
		{"wrong apiVersion", "apiVersion: v2\nkind: Pod\nmetadata: {name: d}", []string{"apiVersion"}},
		{"missing name", "apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}", []string{"metadata.name"}},
		{"anp priority", anp("  priority: 1001\n  subject: {namespaces: {}}"), []string{"spec.priority", "between 0 and 1000"}},
		{"anp subject both", anp("  priority: 1\n  subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}"),
			[]string{"spec.subject", "exactly one"}},
		{"anp bad action", anp("  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Drop, from: [{namespaces: {}}]}]"),
			[]string{"spec.ingress[0].action", "Drop"}},
		{"anp no peers", anp("  priority: 1\n  subject: {namespaces: {}}\n  egress: [{action: Deny, to: []}]"),
			[]string{"spec.egress[0].to"}},
		{"anp too many rules", anp("  priority: 1\n  subject: {namespaces: {}}\n  ingress:\n" + strings.Repeat("  - {action: Deny, from: [{namespaces: {}}]}\n", 101)),
			[]string{"spec.ingress", "must have at most 100 items"}},
		{"anp named port with networks", anp("  priority: 1\n  subject: {namespaces: {}}\n  egress: [{action: Allow, to: [{networks: [10.0.0.0/8]}], ports: [{namedPort: http}]}]"),
			[]string{"spec.egress[0].ports[0].namedPort"}},
		{"anp bad network", anp("  priority: 1\n  subject: {namespaces: {}}\n  egress: [{action: Allow, to: [{networks: [10.0.0.0/99]}]}]"),
			[]string{"spec.egress[0].to[0].networks[0]"}},
		{"anp port range reversed", anp("  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Allow, from: [{namespaces: {}}], ports: [{portRange: {start: 90, end: 80}}]}]"),
			[]string{"portRange.end"}},
		{"anp port with two fields", anp("  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Allow, from: [{namespaces: {}}], ports: [{namedPort: a, portNumber: {port: 80}}]}]"),
			[]string{"spec.ingress[0].ports[0]", "exactly one of portNumber"}},
		{"anp legacy sameLabels", anp("  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Allow, from: [{namespaces: {sameLabels: [a]}}]}]"),
			[]string{"sameLabels", "not supported"}},
		{"banp name", "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: other}\nspec: {subject: {namespaces: {}}}",
			[]string{"metadata.name", `"default"`}},
		{"banp pass", "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress: [{action: Pass, from: [{namespaces: {}}]}]",
			[]string{"spec.ingress[0].action"}},
		{"pod bad ip", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.300}", []string{"status.podIP"}},
		{"pod duplicate port name", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{name: a, containerPort: 1}, {name: a, containerPort: 2}]}]}",
			[]string{"spec.containers[0].ports[1].name", "Duplicate"}},
		{"namespace with namespace", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}", []string{"cluster-scoped"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := decodeString(tc.in)
			if err == nil {
				t.Fatalf("no error; decoded %d objects", len(objs))
			}
			if objs != nil {
				t.Errorf("objects returned together with an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestValidObjects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"nested except", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.1.2.0/24]}}]}]"},
		{"host bits in cidr", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.1/8}}]}]"},
		{"legacy anp peers", "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\nspec:\n  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Allow, from: [{namespaces: {namespaceSelector: {}}}, {pods: {namespaces: {namespaceSelector: {matchLabels: {a: b}}}, podSelector: {}}}]}]"},
		{"namespace named y", "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: n, namespace: y}"},
		{"json list", `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}]}`},
		{"comments only", "# nothing\n---\n# here\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeString(tc.in); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUnknownKindsWarnWhenAsked(t *testing.T) {
	var warnings []string
	objs, err := Decode(strings.NewReader("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s, namespace: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"),
		"in.yaml", DecodeOptions{Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil || len(objs) != 1 {
		t.Fatalf("objects %d, err %v", len(objs), err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "StatefulSet x/s") {
		t.Errorf("warnings %v", warnings)
	}
	if _, err := Decode(strings.NewReader("kind: Mystery\nmetadata: {name: m}\n"), "in.yaml", DecodeOptions{Warn: func(string) {}}); err == nil {
		t.Error("a document without apiVersion was skipped instead of rejected")
	}
}

func TestDefaults(t *testing.T) {
	objs, err := decodeString(`apiVersion: v1
kind: Namespace
metadata: {name: y}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {}
  egress: [{ports: [{port: 53}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: q}
spec: {podSelector: {}}
`)
	if err != nil {
		t.Fatal(err)
	}
	c := FromObjects(objs)
	if got := c.Namespaces["y"].Labels[NamespaceNameLabel]; got != "y" {
		t.Errorf("namespace label = %q", got)
	}
	p := c.NetworkPolicies["default/p"]
	if len(p.Spec.PolicyTypes) != 2 || p.Spec.PolicyTypes[1] != "Egress" {
		t.Errorf("policyTypes = %v, want [Ingress Egress]", p.Spec.PolicyTypes)
	}
	if *p.Spec.Egress[0].Ports[0].Protocol != "TCP" {
		t.Errorf("port protocol not defaulted to TCP")
	}
	if q := c.NetworkPolicies["default/q"]; len(q.Spec.PolicyTypes) != 1 || q.Spec.PolicyTypes[0] != "Ingress" {
		t.Errorf("policyTypes = %v, want [Ingress]", q.Spec.PolicyTypes)
	}
}

func TestThreatDefenseFeedURL(t *testing.T) {
	for _, tc := range []struct {
		url, want string
	}{
		{"https://lists.example/drop.txt", ""},
		{"http://127.0.0.1:8080/list", ""},
		{"ftp://lists.example/drop.txt", "spec.feeds[0].url: Invalid value"},
		{"lists.example/drop.txt", "must be an http:// or https:// URL with a host"},
	} {
		doc := "apiVersion: rampart.io/v1alpha1\nkind: ThreatDefense\nmetadata: {name: default}\nspec:\n  feeds:\n  - {name: f, url: \"" + tc.url + "\"}\n"
		_, err := Decode(strings.NewReader(doc), "td.yaml", DecodeOptions{})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("url %q: error %v, want %q", tc.url, err, tc.want)
		}
	}
}

func TestThreatDefenseShields(t *testing.T) {
	for _, tc := range []struct {
		shield, want string
	}{
		{"{name: sack-panic}", ""},
		{"{name: connection-limit, selector: {matchLabels: {app: web}}}", ""},
		{"{name: connection-limit, connectionLimit: {concurrent: 10, perSecond: 5, burst: 5}}", ""},
		{"{name: connection-limit, connectionLimit: {concurrent: -1}}", "spec.shields[0].connectionLimit.concurrent: Invalid value: -1"},
		{"{name: connection-limit, connectionLimit: {perSecond: 2000000}}", "spec.shields[0].connectionLimit.perSecond: Invalid value"},
		{"{name: connection-limit, connectionLimit: {perSecond: 10, burst: 5}}", "spec.shields[0].connectionLimit.burst: Invalid value: 5: must be at least perSecond (10)"},
		{"{name: connection-limit, connectionLimit: {concurrent: 10, bogus: 1}}", `unknown field "spec.shields[0].connectionLimit.bogus"`},
		{"{name: sack-panic, connectionLimit: {concurrent: 10}}", "spec.shields[0].connectionLimit: Forbidden: only the connection-limit shield takes limits"},
		{"{name: heartbleed}", `spec.shields[0].name: Unsupported value: "heartbleed"`},
	} {
		doc := "apiVersion: rampart.io/v1alpha1\nkind: ThreatDefense\nmetadata: {name: default}\nspec:\n  shields:\n  - " + tc.shield + "\n"
		_, err := Decode(strings.NewReader(doc), "td.yaml", DecodeOptions{})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("shield %s: error %v, want %q", tc.shield, err, tc.want)
		}
	}
	for _, tc := range []struct {
		l                       *ConnectionLimit
		concurrent, rate, burst uint32
	}{
		{nil, DefaultConcurrentConnections, DefaultConnectionsPerSecond, 2 * DefaultConnectionsPerSecond},
		{&ConnectionLimit{PerSecond: 7}, DefaultConcurrentConnections, 7, 14},
		{&ConnectionLimit{Concurrent: 3, PerSecond: 7, Burst: 9}, 3, 7, 9},
	} {
		if c, r, b := tc.l.Limits(); c != tc.concurrent || r != tc.rate || b != tc.burst {
			t.Errorf("Limits of %+v: %d %d %d, want %d %d %d", tc.l, c, r, b, tc.concurrent, tc.rate, tc.burst)
		}
	}
}
