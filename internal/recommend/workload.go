package recommend

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rampart-sec/rampart/internal/model"
)

// volatileLabels differ between the replicas of one workload, or between its revisions: a
// selector on them would follow one pod or one rollout, not the workload.
var volatileLabels = map[string]bool{
	"pod-template-hash":                        true,
	"controller-revision-hash":                 true,
	"pod-template-generation":                  true,
	"statefulset.kubernetes.io/pod-name":       true,
	"apps.kubernetes.io/pod-index":             true,
	"controller-uid":                           true,
	"batch.kubernetes.io/controller-uid":       true,
	"batch.kubernetes.io/job-completion-index": true,
}

// preferredLabels are tried first, in this order, when choosing a workload's selector: the
// labels people and charts put on a workload to name it.
var preferredLabels = []string{
	"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
	"app", "k8s-app", "name", "component", "role", "tier", "release", "version",
}

// workload is a group of pods of one namespace that the recommendation treats as one: the pods
// of one controller (a Deployment's ReplicaSets, a StatefulSet, a DaemonSet, a Job), or bare
// pods with the same stable labels. Policies select it by sel, which selects exactly its pods
// within the namespace unless two workloads share every stable label (they are then merged).
type workload struct {
	ns, name string
	pods     []*model.Pod
	sel      metav1.LabelSelector
}

// key identifies the workload in maps and output order.
func (w *workload) key() string { return w.ns + "/" + w.name }

// stableLabels are a pod's labels without the volatile ones.
func stableLabels(p *model.Pod) map[string]string {
	out := map[string]string{}
	for k, v := range p.Labels {
		if !volatileLabels[k] {
			out[k] = v
		}
	}
	return out
}

// ownerName names the controller that owns p, as users know it: a ReplicaSet created by a
// Deployment is named after the Deployment (its pod-template-hash suffix dropped).
func ownerName(p *model.Pod) (string, bool) {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return "", false
	}
	name := ref.Name
	if ref.Kind == "ReplicaSet" {
		if h := p.Labels["pod-template-hash"]; h != "" {
			name = strings.TrimSuffix(name, "-"+h)
		}
	}
	return name, true
}

// workloads groups the pods (with pod networking) of namespace ns and chooses each group's
// selector. warn receives what the user should know (shared labels, pods without labels).
func workloads(ns string, pods []*model.Pod, warn func(string)) []*workload {
	byKey := map[string]*workload{}
	var order []string
	for _, p := range pods {
		name, owned := ownerName(p)
		key := "owner:" + name
		if !owned {
			st := stableLabels(p)
			name = labelName(st)
			key = "labels:" + labels.Set(st).String()
		}
		w, ok := byKey[key]
		if !ok {
			w = &workload{ns: ns, name: name}
			byKey[key] = w
			order = append(order, key)
		}
		w.pods = append(w.pods, p)
	}
	sort.Strings(order)
	out := make([]*workload, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	var unlabeled []*workload
	for _, w := range out {
		if !chooseSelector(w, pods) {
			unlabeled = append(unlabeled, w)
		}
	}
	// Pods without a stable label in common: selected as the pods lacking every key the
	// namespace's other selectors use, since a policy must never name pods.
	if len(unlabeled) > 0 {
		keys := map[string]bool{}
		for _, w := range out {
			for k := range w.sel.MatchLabels {
				keys[k] = true
			}
		}
		for _, w := range unlabeled {
			warn(fmt.Sprintf("workload %s/%s (%d pod(s)) has no stable label in common: selected as the pods of %s without the labels other workloads are selected by", ns, w.name, len(w.pods), ns))
			for _, k := range model.SortedKeys(keys) {
				w.sel.MatchExpressions = append(w.sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpDoesNotExist})
			}
		}
	}
	// Workloads whose selectors select each other's pods are one for the policies: say so.
	for i, a := range out {
		for _, b := range out[i+1:] {
			if selects(a.sel, b.pods) || selects(b.sel, a.pods) {
				warn(fmt.Sprintf("workloads %s/%s and %s/%s share their stable labels (%s): policies cannot tell them apart", ns, a.name, ns, b.name, selectorString(a.sel)))
			}
		}
	}
	return out
}

// chooseSelector sets w.sel to the fewest common stable labels, preferred ones first, that
// select no pod of the namespace outside w; failing that, every common stable label. It
// returns false when the pods have no stable label in common.
func chooseSelector(w *workload, nsPods []*model.Pod) bool {
	common := stableLabels(w.pods[0])
	for _, p := range w.pods[1:] {
		st := stableLabels(p)
		for k, v := range common {
			if st[k] != v {
				delete(common, k)
			}
		}
	}
	if len(common) == 0 {
		return false
	}
	var keys []string
	for _, k := range preferredLabels {
		if _, ok := common[k]; ok {
			keys = append(keys, k)
		}
	}
	for _, k := range model.SortedKeys(common) {
		if !contains(keys, k) {
			keys = append(keys, k)
		}
	}
	members := map[*model.Pod]bool{}
	for _, p := range w.pods {
		members[p] = true
	}
	sel := map[string]string{}
	for _, k := range keys {
		sel[k] = common[k]
		if exactly(sel, nsPods, members) {
			break
		}
	}
	w.sel = metav1.LabelSelector{MatchLabels: sel}
	return true
}

func exactly(sel map[string]string, nsPods []*model.Pod, members map[*model.Pod]bool) bool {
	s := labels.SelectorFromSet(sel)
	for _, p := range nsPods {
		if !members[p] && s.Matches(labels.Set(p.Labels)) {
			return false
		}
	}
	return true
}

func selects(sel metav1.LabelSelector, pods []*model.Pod) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return false
	}
	for _, p := range pods {
		if s.Matches(labels.Set(p.Labels)) {
			return true
		}
	}
	return false
}

func selectorString(sel metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return "?"
	}
	return s.String()
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// labelName names a bare pod's workload from its preferred labels (or "unlabeled").
func labelName(st map[string]string) string {
	for _, k := range preferredLabels {
		if v := st[k]; v != "" {
			return v
		}
	}
	if len(st) > 0 {
		k := model.SortedKeys(st)[0]
		return st[k]
	}
	return "unlabeled"
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// dnsLabel turns s into a lowercase RFC 1123 label fragment.
func dnsLabel(s string) string {
	s = strings.Trim(notDNS.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 40 {
		s = strings.Trim(s[:40], "-")
	}
	if s == "" {
		s = "workload"
	}
	return s
}
