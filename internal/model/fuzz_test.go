package model

import (
	"strings"
	"testing"
)

// FuzzDecode: any input yields objects or an error, never a panic, and never both.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 80, endPort: 90}]}]}",
		"apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\nspec: {priority: 1, subject: {namespaces: {}}, egress: [{action: Pass, to: [{networks: [0.0.0.0/0]}]}]}",
		"apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Pod, metadata: {name: p}}]",
		"---\n---\n", "{", "kind: 5", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: -1}]}]}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		objs, err := Decode(strings.NewReader(s), "fuzz", DecodeOptions{})
		if err != nil && objs != nil {
			t.Fatal("objects returned with an error")
		}
	})
}

// FuzzParseCIDR: parsing never panics, and what parses is canonical and reparses to itself.
func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.0.1/24", "::/0", "::ffff:10.0.0.0/104", "1.2.3.4", "", "/", "1.2.3.4/-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCIDR(s)
		if err != nil {
			return
		}
		q, err := ParseCIDR(p.String())
		if err != nil || q != p {
			t.Fatalf("%q parsed to %v, which reparses to %v, %v", s, p, q, err)
		}
	})
}
