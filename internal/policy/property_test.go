package policy_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

func matrixOf(t *testing.T, objs []model.Object) map[policy.Cell]bool {
	t.Helper()
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	out := map[policy.Cell]bool{}
	for _, c := range policy.New(rs).Matrix(nil) {
		allowed := c.Allowed
		c.Allowed = false
		out[c] = allowed
	}
	return out
}

func decode(t *testing.T, y string) []model.Object {
	t.Helper()
	objs, err := model.Decode(strings.NewReader(y), "gen", model.DecodeOptions{})
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	return objs
}

func diff(t *testing.T, seed int64, what string, a, b map[policy.Cell]bool, policies string) {
	t.Helper()
	for c, v := range a {
		if b[c] != v {
			t.Fatalf("seed %d: %s: %s -> %s %d/%s: %v vs %v\n%s", seed, what, c.From, c.To, c.Port, c.Protocol, v, b[c], policies)
		}
	}
}

const seeds = 150

// The order objects arrive in never changes a verdict.
func TestPropertyOrderIndependent(t *testing.T) {
	base := decode(t, randpolicy.Cluster())
	for seed := int64(0); seed < seeds; seed++ {
		r := rand.New(rand.NewSource(seed))
		y := randpolicy.Generate(r, randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3})
		objs := append(append([]model.Object{}, base...), decode(t, y)...)
		want := matrixOf(t, objs)
		r.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
		diff(t, seed, "shuffled", want, matrixOf(t, objs), y)
	}
}

// Rules that match no address of the cluster, put before every rule list, change no verdict
// (the differential lab tests use them to reach the iptables chain guards).
func TestPropertyPaddingChangesNothing(t *testing.T) {
	base := decode(t, randpolicy.Cluster())
	changed := 0
	for seed := int64(0); seed < seeds; seed++ {
		opts := randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3}
		y := randpolicy.Generate(rand.New(rand.NewSource(seed)), opts)
		opts.Pad = 9
		padded := randpolicy.Generate(rand.New(rand.NewSource(seed)), opts)
		if padded != y {
			changed++
		}
		want := matrixOf(t, append(append([]model.Object{}, base...), decode(t, y)...))
		diff(t, seed, "padded", want, matrixOf(t, append(append([]model.Object{}, base...), decode(t, padded)...)), padded)
	}
	if changed < seeds/2 {
		t.Errorf("padding changed only %d of %d policy sets", changed, seeds)
	}
}

// An AdminNetworkPolicy that passes everything, ahead of every other, is the same as having
// no admin-tier policies at all (AdminNetworkPolicies, Admin-tier ClusterNetworkPolicies).
func TestPropertyPassAllEqualsNoAdmin(t *testing.T) {
	passAllEqualsNoTier(t, "pass-all ANP", `apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: aaa-pass-all}
spec:
  priority: 0
  subject: {namespaces: {}}
  ingress: [{action: Pass, from: [{namespaces: {}}]}]
  egress: [{action: Pass, to: [{namespaces: {}}, {networks: [0.0.0.0/0]}]}]`, model.KindANP, cnpv1alpha2.AdminTier)
}

// A Baseline-tier ClusterNetworkPolicy that passes everything, ahead of every other, is the
// same as having no baseline tier (Baseline ClusterNetworkPolicies, the BANP): a baseline
// Pass falls through to the default.
func TestPropertyBaselinePassAllEqualsNoBaseline(t *testing.T) {
	passAllEqualsNoTier(t, "baseline pass-all CNP", `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: aaa-pass-all}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  ingress: [{action: Pass, from: [{namespaces: {}}]}]
  egress: [{action: Pass, to: [{namespaces: {}}, {networks: [0.0.0.0/0]}]}]`, model.KindBANP, cnpv1alpha2.BaselineTier)
}

// passAllEqualsNoTier checks, over random policies, that adding passAll gives the matrix of
// the same policies without the tier's: objects of kind, and ClusterNetworkPolicies of tier.
func passAllEqualsNoTier(t *testing.T, what, passAllYAML, kind string, tier cnpv1alpha2.Tier) {
	base := decode(t, randpolicy.Cluster())
	passAll := decode(t, passAllYAML)
	for seed := int64(0); seed < seeds; seed++ {
		y := randpolicy.Generate(rand.New(rand.NewSource(seed)), randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3})
		policies := decode(t, y)
		var without []model.Object
		for _, o := range policies {
			if o.Kind != kind && !(o.Kind == model.KindCNP && o.Obj.(*cnpv1alpha2.ClusterNetworkPolicy).Spec.Tier == tier) {
				without = append(without, o)
			}
		}
		want := matrixOf(t, append(append([]model.Object{}, base...), without...))
		got := matrixOf(t, append(append(append([]model.Object{}, base...), passAll...), policies...))
		diff(t, seed, what, want, got, y)
	}
}

// Selecting every pod with a policy that allows nothing never allows a flow that was denied.
func TestPropertyIsolationOnlyDenies(t *testing.T) {
	base := decode(t, randpolicy.Cluster())
	var deny strings.Builder
	for _, ns := range randpolicy.Namespaces {
		deny.WriteString("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: zz-deny, namespace: " + ns + "}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n")
	}
	denyAll := decode(t, deny.String())
	for seed := int64(0); seed < seeds; seed++ {
		y := randpolicy.Generate(rand.New(rand.NewSource(seed)), randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3})
		objs := append(append([]model.Object{}, base...), decode(t, y)...)
		before := matrixOf(t, objs)
		after := matrixOf(t, append(objs, denyAll...))
		for c, allowed := range after {
			if allowed && !before[c] {
				t.Fatalf("seed %d: %s -> %s %d/%s became allowed after isolating every pod\n%s", seed, c.From, c.To, c.Port, c.Protocol, y)
			}
		}
	}
}

// TestNewFromMatchesNew: an evaluator sharing the previous one's address index (NewFrom, as
// the agent makes one per policy change) answers as a fresh one, through policy changes (pods
// handed over unchanged by the incremental compiler: shared) and a pod's address moving
// (rebuilt: a shared index would miss the new address).
func TestNewFromMatchesNew(t *testing.T) {
	base := decode(t, randpolicy.Cluster())
	comp := compile.NewCompiler(compile.Options{})
	var prev *policy.Evaluator
	for seed := int64(0); seed < 40; seed++ {
		y := randpolicy.Generate(rand.New(rand.NewSource(seed)), randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 2, Baseline: true})
		c := model.FromObjects(append(append([]model.Object{}, base...), decode(t, y)...))
		if seed%4 == 3 { // a pod moves to a new address
			for _, k := range model.SortedKeys(c.Pods) {
				p := c.Pods[k].DeepCopy()
				ip := fmt.Sprintf("10.99.0.%d", seed)
				p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
				c.Pods[k] = p
				break
			}
		}
		rs, err := comp.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		ev := policy.NewFrom(prev, rs)
		fresh := policy.New(rs)
		got, want := ev.Matrix(nil), fresh.Matrix(nil)
		if len(got) != len(want) {
			t.Fatalf("seed %d: %d cells, want %d", seed, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("seed %d: %+v, fresh evaluator %+v\n%s", seed, got[i], want[i], y)
			}
		}
		for _, p := range rs.Pods {
			if e := ev.Endpoint(p.IP()); e.Pod == nil || e.Pod.Name != p.Name {
				t.Fatalf("seed %d: %s resolves to %+v, want pod %s", seed, p.IP(), e.Pod, p.Name)
			}
		}
		prev = ev
	}
}
