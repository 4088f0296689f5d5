package policy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

// base is a small cluster: namespaces x and y, pods with overlapping port names, a node and a
// host-network pod on it.
const base = `
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: blue}}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {role: worker}}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: n1
  containers:
  - name: c
    ports:
    - {name: http, containerPort: 80}
    - {name: dns, containerPort: 53, protocol: UDP}
    - {name: sig, containerPort: 9000, protocol: SCTP}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53}]}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: y, labels: {pod: a}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 81}]}]}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: y, labels: {pod: host}}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c, ports: [{containerPort: 10250}]}]}
status: {podIP: 192.168.0.1}
`

func evaluator(t *testing.T, extra string) *policy.Evaluator {
	t.Helper()
	objs, err := model.Decode(strings.NewReader(base+"\n---\n"+extra), "test", model.DecodeOptions{})
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return policy.New(rs)
}

var podIP = map[string]string{"x/a": "10.0.1.1", "x/b": "10.0.1.2", "y/a": "10.0.2.1", "y/b": "10.0.2.2", "y/host": "192.168.0.1"}

// flow is "x/a>y/b:80/TCP"; endpoints may be pod keys or IPs.
type flow struct {
	spec    string
	allowed bool
	// decided, if set, must be a substring of the deciding policy of the denying side (or of
	// the egress side's, then the ingress side's, when allowed by a rule).
	decided string
}

func parseFlow(t *testing.T, s string) policy.Flow {
	t.Helper()
	ends, pp, _ := strings.Cut(s, ":")
	from, to, _ := strings.Cut(ends, ">")
	addr := func(e string) netip.Addr {
		if ip, ok := podIP[e]; ok {
			e = ip
		}
		return netip.MustParseAddr(e)
	}
	ports, err := policy.ParsePorts(pp)
	if err != nil {
		t.Fatal(err)
	}
	return policy.Flow{Src: addr(from), Dst: addr(to), Port: ports[0].Port, Protocol: ports[0].Protocol}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name     string
		policies string
		flows    []flow
	}{
		{name: "no policy allows everything", flows: []flow{
			{"x/a>y/b:80/TCP", true, ""}, {"y/b>x/a:53/UDP", true, ""}, {"8.8.8.8>x/a:9000/SCTP", true, ""},
		}},
		{name: "ingress [] denies all ingress, [{}] allows all", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: []}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: all, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, ingress: [{}]}`, flows: []flow{
			{"y/a>x/a:80/TCP", false, "x/deny"}, {"8.8.8.8>x/a:80/TCP", false, "x/deny"},
			{"y/a>x/b:80/TCP", true, "x/all"}, {"8.8.8.8>x/b:1/UDP", true, "x/all"},
			{"x/a>y/a:81/TCP", true, ""}, // egress of x/a is not isolated: policyTypes inferred [Ingress]
		}},
		{name: "absent namespaceSelector means the policy's namespace; empty means all", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-ns, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: all-ns-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{namespaceSelector: {}}]}]`, flows: []flow{
			{"x/b>x/a:80/TCP", true, "same-ns"}, {"y/a>x/a:80/TCP", false, "same-ns"},
			{"y/a>x/b:8080/TCP", true, "all-ns-b"}, {"x/a>x/b:8080/TCP", true, "all-ns-b"},
			{"8.8.8.8>x/b:8080/TCP", false, "all-ns-b"}, // namespaceSelector {} selects pods, not external IPs
			{"y/host>x/b:8080/TCP", false, "all-ns-b"},  // nor host-network pods
		}},
		{name: "namespaceSelector and podSelector in one peer intersect, in two peers unite", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {pod: a}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}, {podSelector: {matchLabels: {pod: a}}}]}]`, flows: []flow{
			{"y/a>x/a:80/TCP", true, "x/and"}, {"y/b>x/a:80/TCP", false, "x/and"}, {"x/b>x/a:80/TCP", false, "x/and"},
			{"y/a>x/b:8080/TCP", true, "x/or"}, {"y/b>x/b:8080/TCP", true, "x/or"}, {"x/a>x/b:8080/TCP", true, "x/or"},
		}},
		{name: "policyTypes inference and explicit policyTypes ignore the other direction", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: inferred, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress: [{to: [{podSelector: {matchLabels: {pod: b}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only, namespace: y}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: nobody}}}]}]`, flows: []flow{
			{"x/a>x/b:8080/TCP", true, "inferred"}, {"x/a>y/a:81/TCP", false, "inferred"},
			{"y/b>x/a:80/TCP", false, "inferred"}, // inferred policyTypes include Ingress: isolated, no ingress rules
			{"x/b>y/a:81/TCP", true, ""},          // ingress rules of an Egress-only policy are ignored
			{"y/a>x/b:8080/TCP", false, "egress-only"},
		}},
		{name: "ipBlock with except and nested except", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24, 10.0.2.0/30]}}]
  - from: [{ipBlock: {cidr: 10.0.2.2/32}}]`, flows: []flow{
			{"x/b>x/a:80/TCP", true, "x/cidr"}, {"y/a>x/a:80/TCP", false, "x/cidr"},
			{"y/b>x/a:80/TCP", true, "x/cidr"}, {"10.0.200.9>x/a:80/TCP", true, "x/cidr"},
			{"10.1.0.1>x/a:80/TCP", false, "x/cidr"},
		}},
		{name: "named ports resolve on the destination pod", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-http, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress: [{ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-tcp, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: dns, protocol: TCP}]}, {ports: [{port: sig, protocol: SCTP}]}]`, flows: []flow{
			{"y/b>x/b:8080/TCP", true, "egress-http"}, // x/b's http is 8080
			{"y/b>y/a:81/TCP", true, "egress-http"},   // y/a's http is 81
			{"y/b>y/a:80/TCP", false, "egress-http"},  // 80 is not y/a's http
			{"y/b>x/b:80/TCP", false, "egress-http"},
			{"y/b>x/a:80/TCP", false, "dns-tcp"},   // egress ok (x/a's http is 80); ingress of x/a denies
			{"x/b>x/a:53/UDP", false, "dns-tcp"},   // x/a's dns is UDP: a TCP named port does not match it
			{"x/b>x/a:53/TCP", false, "dns-tcp"},   // nor TCP 53, which x/a does not declare
			{"x/b>x/a:9000/SCTP", true, "dns-tcp"}, // SCTP named port
		}},
		{name: "protocol-only rules and endPort ranges; other protocols stay isolated", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{protocol: UDP}, {port: 1000, endPort: 2000}]}]`, flows: []flow{
			{"y/a>x/a:53/UDP", true, "x/ports"}, {"y/a>x/a:65535/UDP", true, "x/ports"},
			{"y/a>x/a:1000/TCP", true, "x/ports"}, {"y/a>x/a:2000/TCP", true, "x/ports"},
			{"y/a>x/a:2001/TCP", false, "x/ports"}, {"y/a>x/a:999/TCP", false, "x/ports"},
			{"y/a>x/a:1500/SCTP", false, "x/ports"}, {"y/a>x/a:80/TCP", false, "x/ports"},
		}},
		{name: "policies are additive", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: one, namespace: x}
spec: {podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: two, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}`, flows: []flow{
			{"x/a>x/b:8080/TCP", true, "x/one"}, {"y/b>x/b:8080/TCP", true, "x/two"},
			{"y/b>x/a:80/TCP", false, "x/one"},
		}},
		{name: "egress and ingress must both allow", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: eg, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in, namespace: y}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}}]}]}`, flows: []flow{
			{"x/a>y/a:81/TCP", false, "y/in"}, {"x/a>y/b:80/TCP", true, "x/eg"},
			{"x/a>8.8.8.8:443/TCP", false, "x/eg"}, {"y/b>y/a:81/TCP", true, "y/in"},
		}},
		{name: "host-network pods and external addresses are not subjects; own address always allowed", policies: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: y}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}`, flows: []flow{
			{"y/host>x/a:80/TCP", true, ""}, {"x/a>y/host:10250/TCP", true, ""},
			{"y/a>y/a:81/TCP", true, ""}, {"y/b>x/a:80/TCP", false, "y/deny-all"},
		}},
		{name: "ANP Deny beats NetworkPolicy allow; Allow beats NetworkPolicy deny", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: anp}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - {name: deny-blue-a, action: Deny, from: [{pods: {namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {pod: a}}}}]}
  - {name: allow-blue, action: Allow, from: [{namespaces: {matchLabels: {team: blue}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, ingress: []}`, flows: []flow{
			{"y/a>x/a:80/TCP", false, "deny-blue-a"}, {"y/b>x/a:80/TCP", true, "anp"},
			{"x/b>x/a:80/TCP", true, "x/np"},
		}},
		{name: "ANP Pass falls through to NetworkPolicy, then BANP", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: pass}
spec:
  priority: 1
  subject: {namespaces: {}}
  ingress: [{action: Pass, from: [{namespaces: {matchLabels: {team: blue}}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: later-deny}
spec:
  priority: 2
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {pod: a}}}]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {action: Allow, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}}]}
  - {action: Deny, from: [{namespaces: {}}]}`, flows: []flow{
			{"y/a>x/a:80/TCP", true, "np-a"},          // passed, NP allows
			{"y/b>x/a:80/TCP", false, "np-a"},         // passed, NP isolates: BANP is not consulted
			{"y/b>x/b:8080/TCP", true, "Baseline"},    // passed, no NP selects x/b: BANP allows pod=b
			{"y/a>x/b:8080/TCP", false, "Baseline"},   // passed, BANP denies
			{"x/a>x/b:8080/TCP", false, "later-deny"}, // not passed: priority 2 denies
		}},
		{name: "ANP priorities: lower number first, rule order within a policy", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: low-prio-allow}
spec:
  priority: 50
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}}
  ingress: [{action: Allow, from: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: high-prio}
spec:
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}}
  ingress:
  - {name: allow-80, action: Allow, from: [{namespaces: {}}], ports: [{portNumber: {port: 80, protocol: TCP}}]}
  - {name: deny-rest, action: Deny, from: [{namespaces: {}}]}`, flows: []flow{
			{"x/b>x/a:80/TCP", true, "allow-80"}, {"x/b>x/a:53/UDP", false, "deny-rest"},
			{"x/b>y/a:81/TCP", false, "deny-rest"},
		}},
		{name: "ANP equal priorities are ordered by name", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: b-allow}
spec: {priority: 7, subject: {namespaces: {}}, ingress: [{action: Allow, from: [{namespaces: {}}]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: a-deny}
spec: {priority: 7, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}`, flows: []flow{
			{"x/b>x/a:80/TCP", false, "a-deny"},
		}},
		{name: "BANP applies only when no NetworkPolicy selects the pod", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
  egress: [{action: Deny, to: [{namespaces: {}}], ports: [{portNumber: {port: 53, protocol: UDP}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{}]}`, flows: []flow{
			{"y/a>x/a:80/TCP", true, "allow-a"}, {"y/a>x/b:8080/TCP", false, "Baseline"},
			{"8.8.8.8>x/b:8080/TCP", true, ""}, // BANP namespaces peers match pods only
			{"y/b>x/a:53/UDP", false, "Baseline"},
		}},
		{name: "ANP networks match pod IPs; nodes match node IPs and host-network pods", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: egress}
spec:
  priority: 3
  subject: {namespaces: {matchLabels: {team: red}}}
  egress:
  - {action: Allow, to: [{nodes: {matchLabels: {role: worker}}}]}
  - {action: Deny, to: [{networks: [10.0.2.0/24]}]}
  - {action: Allow, to: [{networks: [0.0.0.0/0]}], ports: [{portRange: {start: 440, end: 450}}]}
  - {action: Deny, to: [{networks: [0.0.0.0/0]}]}`, flows: []flow{
			{"x/a>y/host:10250/TCP", true, "egress"}, {"x/a>192.168.0.1:22/TCP", true, "egress"},
			{"x/a>y/a:81/TCP", false, "egress"}, {"x/a>1.1.1.1:443/TCP", true, "egress"},
			{"x/a>1.1.1.1:443/UDP", false, "egress"}, {"x/a>x/b:8080/TCP", false, "egress"},
		}},
		{name: "ANP named ports resolve on the destination for egress", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: named}
spec:
  priority: 3
  subject: {namespaces: {matchLabels: {team: blue}}}
  egress:
  - {action: Allow, to: [{namespaces: {}}], ports: [{namedPort: http}]}
  - {action: Deny, to: [{namespaces: {}}]}`, flows: []flow{
			{"y/b>x/b:8080/TCP", true, "named"}, {"y/b>x/a:80/TCP", true, "named"}, {"y/b>x/a:8080/TCP", false, "named"},
		}},
		{name: "cnp baseline pass falls through to the default, past later baseline policies", policies: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: pass-blue}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: x}}}
  ingress: [{name: pass-from-blue, action: Pass, from: [{namespaces: {matchLabels: {team: blue}}}]}]
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: deny-all}
spec:
  tier: Baseline
  priority: 2
  subject: {namespaces: {}}
  ingress: [{name: deny, action: Deny, from: [{namespaces: {}}]}]`, flows: []flow{
			{"y/a>x/a:80/TCP", true, "pass-blue"}, {"x/b>x/a:80/TCP", false, "deny-all"}, {"x/a>y/a:81/TCP", false, "deny-all"},
		}},
		{name: "cnp baseline priorities order the tier; the BANP comes last", policies: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: z-accept}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  ingress: [{action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}}], protocols: [{tcp: {destinationPort: {range: {start: 80, end: 81}}}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]`, flows: []flow{
			{"x/a>y/b:80/TCP", true, "z-accept"}, {"x/a>y/a:81/TCP", true, "z-accept"}, {"x/a>x/b:8080/TCP", false, "BaselineAdminNetworkPolicy default"},
			{"x/b>y/b:80/TCP", false, "BaselineAdminNetworkPolicy"},
		}},
		{name: "cnp admin accept on egress does not bypass the destination's ingress deny", policies: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: out}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: x}}}
  egress: [{action: Accept, to: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: in}
spec:
  tier: Baseline
  priority: 10
  subject: {namespaces: {matchLabels: {team: blue}}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]`, flows: []flow{
			{"x/a>y/b:80/TCP", false, "ClusterNetworkPolicy in (Baseline tier, priority 10)"}, {"x/a>x/b:8080/TCP", true, "ClusterNetworkPolicy out (Admin tier, priority 10)"},
		}},
		{name: "cnp and anp share the admin tier by priority; a Pass reaches NetworkPolicy", policies: `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: anp-deny}
spec:
  priority: 20
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: cnp-pass}
spec:
  tier: Admin
  priority: 19
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: y}}}
  ingress: [{action: Pass, from: [{namespaces: {}}], protocols: [{destinationNamedPort: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a, namespace: y}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{}]`, flows: []flow{
			{"x/a>y/a:81/TCP", true, "allow-a"}, {"x/a>y/b:80/TCP", false, "anp-deny"}, {"x/a>x/b:8080/TCP", false, "anp-deny"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := evaluator(t, tc.policies)
			for _, f := range tc.flows {
				d := ev.Verdict(parseFlow(t, f.spec))
				if d.Allowed != f.allowed {
					t.Errorf("%s: allowed=%v, want %v\negress: %s\ningress: %s", f.spec, d.Allowed, f.allowed, d.Egress.Reason, d.Ingress.Reason)
					continue
				}
				if f.decided == "" {
					continue
				}
				got := decidedBy(d)
				if !strings.Contains(got, f.decided) {
					t.Errorf("%s: decided by %q, want it to name %q", f.spec, got, f.decided)
				}
			}
		})
	}
}

// decidedBy names what decided the flow: the denying side's policy when denied, otherwise every
// policy or rule that allowed it.
func decidedBy(d policy.Decision) string {
	var parts []string
	for _, s := range []policy.Side{d.Egress, d.Ingress} {
		if d.Allowed || !s.Allowed {
			parts = append(parts, s.Tier+" "+s.Policy+" "+s.RuleName+" "+s.Reason)
		}
	}
	return strings.Join(parts, " | ")
}

func TestMatrixDefaultsToDeclaredPorts(t *testing.T) {
	ev := evaluator(t, "")
	cells := ev.Matrix(nil)
	n := 0
	for _, c := range cells {
		if c.To == "x/a" {
			n++
		}
		if c.From == c.To {
			t.Fatalf("self pair %v", c)
		}
	}
	// 4 other pods probe x/a's 3 declared ports.
	if n != 12 {
		t.Fatalf("x/a probed %d times, want 12", n)
	}
	cells = ev.Matrix([]policy.PortProto{{Port: 80, Protocol: ir.TCP}})
	if len(cells) != 5*4 {
		t.Fatalf("got %d cells with --ports, want 20", len(cells))
	}
}

// TestAllowedMemo: the memo answers as Verdict does, the first time and from memory.
func TestAllowedMemo(t *testing.T) {
	ev := evaluator(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.1.2/32}}], ports: [{port: 80}]}]`)
	memo := ev.NewAllowed()
	var flows []policy.Flow
	for _, src := range []string{"10.0.1.1", "10.0.1.2", "10.0.2.1"} {
		for _, dst := range []string{"10.0.1.1", "10.0.1.2", "10.0.2.1"} {
			for _, port := range []uint16{80, 81} {
				flows = append(flows, policy.Flow{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: ir.TCP, Port: port})
			}
		}
	}
	denied := 0
	for round := 0; round < 2; round++ {
		for _, f := range flows {
			want := ev.Verdict(f).Allowed
			if got := memo.Allowed(f); got != want {
				t.Errorf("round %d, %s: memo %v, Verdict %v", round, f, got, want)
			}
			if !want && round == 0 {
				denied++
			}
		}
	}
	if denied == 0 || denied == len(flows) {
		t.Fatalf("%d of %d flows denied: the cluster does not tell the verdicts apart", denied, len(flows))
	}
}
