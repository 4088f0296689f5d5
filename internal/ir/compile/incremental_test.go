package compile_test

import (
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

// TestCompilerMatchesCompile: a Compiler given a cluster's successive states (random policy
// sets, one policy changed among unchanged ones (which it replays), and between them pods,
// namespaces and nodes changed, added or removed, handed over as
// the same objects, as a source's cache does, or as equal copies, as the lab's store does)
// returns exactly what Compile returns for each state.
func TestCompilerMatchesCompile(t *testing.T) {
	base, err := model.Decode(strings.NewReader(randpolicy.Cluster()), "cluster", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := model.FromObjects(base)
	x := compile.NewCompiler(compile.Options{})
	r := rand.New(rand.NewSource(1))
	for step := 0; step < 300; step++ {
		next := shallowCopy(c)
		if r.Intn(2) == 0 {
			next = c.Clone()
		}
		var what string
		switch r.Intn(8) {
		case 0, 1, 2: // a policy change: pods as they were
			y := randpolicy.Generate(rand.New(rand.NewSource(int64(step))), randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 2, Baseline: true, ClusterPolicies: 2})
			objs, err := model.Decode(strings.NewReader(y), "gen", model.DecodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p := model.FromObjects(objs)
			next.NetworkPolicies, next.ANPs, next.BANPs, next.CNPs = p.NetworkPolicies, p.ANPs, p.BANPs, p.CNPs
			what = "policies"
		case 3: // a pod's label, IP or named port
			keys := model.SortedKeys(next.Pods)
			key := keys[r.Intn(len(keys))]
			pod := next.Pods[key].DeepCopy()
			switch r.Intn(3) {
			case 0:
				pod.Labels = maps.Clone(pod.Labels)
				pod.Labels["pod"] = []string{"a", "b", "c", "d"}[r.Intn(4)]
			case 1:
				pod.Status.PodIPs[0].IP = fmt.Sprintf("10.244.%d.%d", 1+r.Intn(3), 100+r.Intn(100))
				pod.Status.PodIP = pod.Status.PodIPs[0].IP
			case 2:
				if len(pod.Spec.Containers) > 0 && len(pod.Spec.Containers[0].Ports) > 0 {
					pod.Spec.Containers[0].Ports[0].ContainerPort = int32(70 + r.Intn(20))
				}
			}
			next.Pods[key] = pod
			what = "pod " + key
		case 4: // a pod added or removed
			keys := model.SortedKeys(next.Pods)
			key := keys[r.Intn(len(keys))]
			if r.Intn(2) == 0 {
				delete(next.Pods, key)
				what = "pod removed"
			} else {
				pod := next.Pods[key].DeepCopy()
				pod.Name += fmt.Sprintf("-copy%d", step)
				pod.Status.PodIPs[0].IP = fmt.Sprintf("10.244.%d.%d", 1+r.Intn(3), 200+step%50)
				next.Pods[pod.Namespace+"/"+pod.Name] = pod
				what = "pod added"
			}
		case 6, 7: // one NetworkPolicy changed, the others kept as they were
			keys := model.SortedKeys(next.NetworkPolicies)
			if len(keys) == 0 {
				continue
			}
			key := keys[0] // the first compiled: the sets of the others move
			if r.Intn(3) == 0 {
				key = keys[r.Intn(len(keys))]
			}
			np := next.NetworkPolicies[key].DeepCopy()
			switch {
			case len(np.Spec.Ingress) > 0 && r.Intn(2) == 0:
				np.Spec.Ingress = np.Spec.Ingress[1:] // a rule less: its sets may go
			case len(np.Spec.Egress) > 0:
				np.Spec.Egress = append(np.Spec.Egress, np.Spec.Egress[0]) // a rule more
			default:
				np.Spec.PodSelector.MatchLabels = map[string]string{"pod": "b"}
			}
			next.NetworkPolicies[key] = np
			what = "NetworkPolicy " + key
		case 5: // a namespace's labels
			keys := model.SortedKeys(next.Namespaces)
			key := keys[r.Intn(len(keys))]
			ns := next.Namespaces[key].DeepCopy()
			ns.Labels = maps.Clone(ns.Labels)
			ns.Labels["team"] = []string{"red", "blue"}[r.Intn(2)]
			next.Namespaces[key] = ns
			what = "namespace " + key
		}
		c = next
		got, err := x.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := compile.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d (%s): the Compiler's Ruleset differs from Compile's: %s", step, what, diffRS(got, want))
		}
	}
}

// shallowCopy copies the cluster's maps, not its objects (as a source's snapshot shares them).
func shallowCopy(c *model.Cluster) *model.Cluster {
	n := *c
	n.Namespaces, n.Nodes, n.Pods = maps.Clone(c.Namespaces), maps.Clone(c.Nodes), maps.Clone(c.Pods)
	n.NetworkPolicies, n.ANPs, n.BANPs, n.CNPs = maps.Clone(c.NetworkPolicies), maps.Clone(c.ANPs), maps.Clone(c.BANPs), maps.Clone(c.CNPs)
	return &n
}

// diffRS names the first part in which two Rulesets differ, for a failure's message.
func diffRS(a, b *ir.Ruleset) string {
	if !reflect.DeepEqual(a.Sets, b.Sets) {
		for i := range a.Sets {
			if i >= len(b.Sets) || !reflect.DeepEqual(a.Sets[i], b.Sets[i]) {
				var bs any
				if i < len(b.Sets) {
					bs = b.Sets[i]
				}
				return fmt.Sprintf("set %d: %+v vs %+v (len %d %d)", i, a.Sets[i], bs, len(a.Sets), len(b.Sets))
			}
		}
		return fmt.Sprintf("sets len %d %d", len(a.Sets), len(b.Sets))
	}
	if !reflect.DeepEqual(a.Tiers, b.Tiers) {
		for d := range a.Tiers {
			for ti := range a.Tiers[d] {
				if !reflect.DeepEqual(a.Tiers[d][ti], b.Tiers[d][ti]) {
					for pi := range a.Tiers[d][ti].Policies {
						if pi < len(b.Tiers[d][ti].Policies) && !reflect.DeepEqual(a.Tiers[d][ti].Policies[pi], b.Tiers[d][ti].Policies[pi]) {
							return fmt.Sprintf("tier %d %d pol %d: %+v\nvs %+v", d, ti, pi, a.Tiers[d][ti].Policies[pi], b.Tiers[d][ti].Policies[pi])
						}
					}
					return fmt.Sprintf("tier %d %d", d, ti)
				}
			}
		}
	}
	if !reflect.DeepEqual(a.PortSets, b.PortSets) {
		return "portsets"
	}
	if !reflect.DeepEqual(a.Pods, b.Pods) {
		return "pods"
	}
	return "other"
}
