package model

import (
	"strings"
	"testing"
)

func cnp(spec string) string {
	return "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: c}\nspec:\n" + spec
}

const cnpHead = "  tier: Admin\n  priority: 5\n  subject: {namespaces: {}}\n"

func TestCNPValidation(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error; none: valid
	}{
		{"valid admin", cnp(cnpHead + "  ingress: [{action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80}}}, {udp: {destinationPort: {range: {start: 1, end: 2}}}}, {destinationNamedPort: web}]}]"), nil},
		{"valid v1beta1 baseline", strings.Replace(cnp("  tier: Baseline\n  priority: 0\n  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}}\n  egress: [{action: Pass, to: [{networks: [10.0.0.0/8]}, {nodes: {}}]}]"), "v1alpha2", "v1beta1", 1), nil},
		{"unknown tier", cnp("  tier: Middle\n  priority: 5\n  subject: {namespaces: {}}"), []string{"ClusterNetworkPolicy c", "spec.tier", `"Middle"`, "Admin", "Baseline"}},
		{"no tier", cnp("  priority: 5\n  subject: {namespaces: {}}"), []string{"spec.tier", "Required"}},
		{"priority", cnp("  tier: Admin\n  priority: 1001\n  subject: {namespaces: {}}"), []string{"spec.priority", "between 0 and 1000"}},
		{"two subjects", cnp("  tier: Admin\n  priority: 1\n  subject: {namespaces: {}, pods: {podSelector: {}}}"), []string{"spec.subject", "exactly one"}},
		{"allow is not a CNP action", cnp(cnpHead + "  ingress: [{action: Allow, from: [{namespaces: {}}]}]"), []string{"spec.ingress[0].action", "Accept"}},
		{"no peers", cnp(cnpHead + "  ingress: [{action: Deny, from: []}]"), []string{"spec.ingress[0].from", "at least one peer"}},
		{"range start not below end", cnp(cnpHead + "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 80, end: 80}}}}]}]"),
			[]string{"protocols[0].tcp.destinationPort.range", "Start port must be less than End port"}},
		{"empty tcp", cnp(cnpHead + "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {}}]}]"), []string{"protocols[0].tcp.destinationPort", "Required"}},
		{"two protocols in one", cnp(cnpHead + "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 1}}, udp: {destinationPort: {number: 1}}}]}]"), []string{"protocols[0]", "exactly one"}},
		{"port zero", cnp(cnpHead + "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{sctp: {destinationPort: {number: 0}}}]}]"), []string{"sctp.destinationPort.number"}},
		{"cidr not canonical", cnp(cnpHead + "  egress: [{action: Deny, to: [{networks: [10.1.2.3/8]}]}]"), []string{"spec.egress[0].to[0].networks[0]", "canonical"}},
		{"named port with networks", cnp(cnpHead + "  egress: [{action: Deny, to: [{networks: [10.0.0.0/8]}], protocols: [{destinationNamedPort: web}]}]"), []string{"destinationNamedPort", "no namedPorts for networks"}},
		{"too many rules", cnp(cnpHead + "  ingress:" + strings.Repeat("\n  - {action: Deny, from: [{namespaces: {}}]}", 26)), []string{"spec.ingress", "26"}},
		{"domain names not enforced", cnp(cnpHead + "  egress: [{action: Accept, to: [{domainNames: [\"*.example.com\"]}]}]"), []string{"spec.egress[0].to[0].domainNames", "not enforced", "--skip-unsupported"}},
		{"bad domain name", cnp(cnpHead + "  egress: [{action: Accept, to: [{domainNames: [\"a*.example.com\"]}]}]"), []string{"domainNames[0]", "domain name"}},
		{"staged", strings.Replace(cnp(cnpHead), "{name: c}", "{name: c, annotations: {rampart.io/staged: \"maybe\"}}", 1), []string{"rampart.io/staged"}},
		{"unknown policy kind", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: x}\nspec: {}", []string{"CiliumNetworkPolicy x/c", "does not enforce", "--skip-unsupported"}},
		{"unknown policy version", "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: ClusterNetworkPolicy\nmetadata: {name: c}\nspec: {}", []string{"apiVersion", "v1alpha2", "v1beta1"}},
		{"old NetworkPolicy version", "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: c, namespace: x}\nspec: {}", []string{"NetworkPolicy x/c", "not enforced"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Warn set and no SkipUnsupported: policy gaps must still be errors.
			_, err := Decode(strings.NewReader(tt.in), "in.yaml", DecodeOptions{Warn: func(string) {}})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSkipUnsupported(t *testing.T) {
	in := "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspec: {}\n---\n" +
		cnp(cnpHead+"  egress: [{action: Deny, to: [{domainNames: [example.com]}]}]")
	var warnings []string
	objs, err := Decode(strings.NewReader(in), "in.yaml", DecodeOptions{SkipUnsupported: true, Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Kind != KindCNP {
		t.Fatalf("objects %v, want the ClusterNetworkPolicy only", objs)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], "skipping cilium.io/v2 CiliumClusterwideNetworkPolicy c") || !strings.Contains(warnings[1], "domainNames") {
		t.Fatalf("warnings %q", warnings)
	}
	c := FromObjects(objs)
	if gaps := c.Unsupported(); len(gaps) != 1 || gaps[0].Field != "spec.egress[0].to[0].domainNames" {
		t.Fatalf("gaps %v", gaps)
	}
	// Without Warn nothing is skipped silently.
	if _, err := Decode(strings.NewReader(in), "in.yaml", DecodeOptions{SkipUnsupported: true}); err == nil {
		t.Fatal("SkipUnsupported without Warn accepted")
	}
}

func TestIsPolicyKind(t *testing.T) {
	for _, tt := range []struct {
		apiVersion, kind string
		want             bool
	}{
		{"cilium.io/v2", "CiliumNetworkPolicy", true},
		{"crd.projectcalico.org/v1", "GlobalNetworkPolicy", true},
		{"projectcalico.org/v3", "StagedNetworkPolicy", true},
		{"crd.antrea.io/v1beta1", "ClusterNetworkPolicy", true},
		{"k8s.ovn.org/v1", "EgressFirewall", true},
		{"policy.networking.k8s.io/v1alpha3", "Whatever", true},
		{"networking.k8s.io/v1", "Ingress", false},
		{"apps/v1", "Deployment", false},
		{"policy/v1", "PodDisruptionBudget", false},
		{"admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", false},
	} {
		if got := IsPolicyKind(tt.apiVersion, tt.kind); got != tt.want {
			t.Errorf("IsPolicyKind(%s, %s) = %v, want %v", tt.apiVersion, tt.kind, got, tt.want)
		}
	}
}
