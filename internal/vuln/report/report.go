// Package report joins image findings with the pods that run the images and their network
// exposure, ranks the findings by severity x exposure, explains each rank in a sentence, and
// writes reports as a table, JSON or SARIF.
package report

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/vuln"
	"github.com/rampart-sec/rampart/internal/vuln/exposure"
)

// Image is the scan of one image.
type Image struct {
	Image           string               `json:"image"`            // reference as pods use it, or the scanned path
	Target          string               `json:"target,omitempty"` // what was read: file, directory, registry
	Kind            string               `json:"kind,omitempty"`
	Packages        int                  `json:"packages"`
	Vulnerabilities []vuln.Vulnerability `json:"vulnerabilities"`
	Pods            []string             `json:"pods,omitempty"` // ns/name of the pods running it
	Error           string               `json:"error,omitempty"`
}

// Finding is one vulnerability of one image, with the pods it affects.
type Finding struct {
	vuln.Vulnerability
	Image string `json:"image"`
	// Exposure is how reachable the affected pods are; pods running the image but reachable
	// differently make separate findings.
	Exposure exposure.Class `json:"exposure"`
	Pods     []exposure.Pod `json:"pods"`
	// ExposureBefore is, in a what-if scan (scan cluster --with-policies), the exposure under
	// the policies in force, while Exposure and Pods are under the proposal; ExposureChange
	// says both, e.g. "internet -> 2 pods (backend/api-0, backend/api-1)".
	ExposureBefore exposure.Class `json:"exposureBefore,omitempty"`
	ExposureChange string         `json:"exposureChange,omitempty"`
	// Rank is severity (CVSS, or its level's band) x exposure weight; higher is more urgent.
	Rank        float64 `json:"rank"`
	Explanation string  `json:"explanation"`
}

// Cluster is the report of `rampart scan cluster`.
type Cluster struct {
	Findings  []Finding `json:"findings"`
	Images    []Image   `json:"images"`
	Unscanned []Image   `json:"unscanned,omitempty"`
}

// ImagesInUse maps each image reference to the pods (ns/name) whose containers run it, init
// containers included (they run, and are exposed while they do).
func ImagesInUse(c *model.Cluster) map[string][]string {
	out := map[string][]string{}
	for _, k := range model.SortedKeys(c.Pods) {
		p := c.Pods[k]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		seen := map[string]bool{}
		for _, cs := range [][]model.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for _, ct := range cs {
				if ct.Image != "" && !seen[ct.Image] {
					seen[ct.Image] = true
					out[ct.Image] = append(out[ct.Image], k)
				}
			}
		}
	}
	return out
}

// Rank builds the ranked findings of scanned images, whose Pods name the pods running them.
func Rank(images []Image, a *exposure.Analyzer) []Finding {
	return rank(images, a.Of)
}

// RankWhatIf ranks findings as they would be under the proposal (after), each saying how
// its pods are reachable now (now) and would be then.
func RankWhatIf(images []Image, now, after *exposure.Analyzer) []Finding {
	return rankWhatIf(images, now.Of, after.Of)
}

func rankWhatIf(images []Image, nowOf, afterOf func(string) (exposure.Pod, bool)) []Finding {
	out := rank(images, afterOf)
	for i := range out {
		f := &out[i]
		var before []exposure.Pod
		for _, p := range f.Pods {
			if e, ok := nowOf(p.Pod); ok {
				before = append(before, e)
			}
		}
		f.ExposureBefore = widest(before)
		f.ExposureChange = audience(before) + " -> " + audience(f.Pods)
	}
	return out
}

// widest is the widest class of pods (none for no pods).
func widest(pods []exposure.Pod) exposure.Class {
	c := exposure.None
	for _, p := range pods {
		if p.Class.Weight() > c.Weight() {
			c = p.Class
		}
	}
	return c
}

// audience says in a few words who can reach the widest-exposed of pods: "internet",
// "addresses outside the cluster (10.0.0.0/8)", "every pod", "2 pods (a/b, c/d)" or "none".
func audience(pods []exposure.Pod) string {
	c := widest(pods)
	switch c {
	case exposure.External:
		var from []string
		seen := map[string]bool{}
		for _, p := range pods {
			for _, pt := range p.Ports {
				for _, a := range pt.FromAddresses {
					if pt.Class == c && !seen[a] {
						seen[a] = true
						from = append(from, a)
					}
				}
			}
		}
		return "addresses outside the cluster (" + strings.Join(first(from, 3), ", ") + ")"
	case exposure.Cluster:
		return "every pod"
	case exposure.Pods:
		var from []string
		seen := map[string]bool{}
		n := 0
		for _, p := range pods {
			for _, pt := range p.Ports {
				if pt.Class != c {
					continue
				}
				n = max(n, pt.PodsAllowed)
				for _, q := range pt.FromPods {
					if !seen[q] {
						seen[q] = true
						from = append(from, q)
					}
				}
			}
		}
		sort.Strings(from)
		n = max(n, len(from))
		return fmt.Sprintf("%d pod%s (%s)", n, plural(n), strings.Join(first(from, 3), ", "))
	}
	return string(c)
}

func rank(images []Image, of func(string) (exposure.Pod, bool)) []Finding {
	var out []Finding
	for _, img := range images {
		var pods []exposure.Pod
		for _, k := range img.Pods {
			if e, ok := of(k); ok {
				pods = append(pods, e)
			}
		}
		for _, group := range exposureGroups(pods) {
			class := exposure.None
			if len(group) > 0 {
				class = group[0].Class
			}
			where := wherePhrase(group)
			for _, v := range img.Vulnerabilities {
				f := Finding{Vulnerability: v, Image: img.Image, Exposure: class, Pods: group}
				if f.Pods == nil {
					f.Pods = []exposure.Pod{}
				}
				f.Rank = round2(v.Severity.RankScore() * class.Weight())
				f.Explanation = explain(v, where)
				out = append(out, f)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Rank != b.Rank {
			return a.Rank > b.Rank
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		if a.Image != b.Image {
			return a.Image < b.Image
		}
		return len(a.Pods) > 0 && len(b.Pods) > 0 && a.Pods[0].Pod < b.Pods[0].Pod
	})
	return out
}

// exposureGroups splits the pods running an image by how they are reachable (the sentence that
// explains it), so that the same vulnerability ranks high where a pod is exposed and low where
// it is isolated, while replicas exposed alike make one finding. Widest exposure first; an image
// no pod runs makes one empty group.
func exposureGroups(pods []exposure.Pod) [][]exposure.Pod {
	if len(pods) == 0 {
		return [][]exposure.Pod{nil}
	}
	byKey := map[string]int{}
	var groups [][]exposure.Pod
	for _, p := range pods {
		k := string(p.Class) + "|" + podPhrase(exposure.Pod{Ports: p.Ports, NoAddress: p.NoAddress, Class: p.Class})
		i, ok := byKey[k]
		if !ok {
			i = len(groups)
			byKey[k] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], p)
	}
	sort.SliceStable(groups, func(i, j int) bool { return groups[i][0].Class.Weight() > groups[j][0].Class.Weight() })
	return groups
}

func round2(x float64) float64 { return float64(int(x*100+0.5)) / 100 }

// Explain says in one sentence why a finding ranks where it does: severity, fix, and how the
// most exposed affected pod can be reached.
func Explain(v vuln.Vulnerability, pods []exposure.Pod) string { return explain(v, wherePhrase(pods)) }

func explain(v vuln.Vulnerability, where string) string {
	return SeverityPhrase(v.Severity) + ", " + fixPhrase(v) + ": " + where
}

// wherePhrase says how the most exposed of pods can be reached; the same for every
// vulnerability of an image's exposure group.
func wherePhrase(pods []exposure.Pod) string {
	if len(pods) == 0 {
		return "no running pod uses the image"
	}
	where := podPhrase(pods[0])
	if n := len(pods) - 1; n > 0 {
		where += fmt.Sprintf(" (and %d more pod%s)", n, plural(n))
	}
	return where
}

// SeverityPhrase is "critical (CVSS 9.8)", "high" or "unrated".
func SeverityPhrase(s vuln.Severity) string {
	lvl := levelName(s.Level)
	if s.Score > 0 {
		return fmt.Sprintf("%s (CVSS %.1f)", lvl, s.Score)
	}
	return lvl
}

func podPhrase(p exposure.Pod) string {
	var widest *exposure.Port
	for i := range p.Ports {
		if widest == nil || p.Ports[i].Class.Weight() > widest.Class.Weight() {
			widest = &p.Ports[i]
		}
	}
	if p.NoAddress {
		return fmt.Sprintf("pod %s has no address yet (not running), so nothing can reach it for now", p.Pod)
	}
	if widest == nil {
		return fmt.Sprintf("pod %s declares no container ports and no Service sends to it, so its network exposure is not known", p.Pod)
	}
	port := fmt.Sprintf("%s %d", widest.Protocol, widest.Port)
	if more := countClass(p.Ports, widest.Class) - 1; more > 0 {
		port += fmt.Sprintf(" (and %d more port%s)", more, plural(more))
	}
	var who string
	switch widest.Class {
	case exposure.Internet:
		who = "from any address"
		if len(widest.FromAddresses) > 0 && widest.FromAddresses[0] != "0.0.0.0/0" && widest.FromAddresses[0] != "::/0" {
			who = "from the internet (" + strings.Join(first(widest.FromAddresses, 3), ", ") + ")"
		}
	case exposure.External:
		who = "from " + strings.Join(first(widest.FromAddresses, 3), ", ") + " outside the cluster"
	case exposure.Cluster:
		who = "from every pod in every namespace"
	case exposure.Pods:
		who = fmt.Sprintf("only from %d of %d pods (%s)", widest.PodsAllowed, widest.PodsTotal, strings.Join(first(widest.FromPods, 3), ", "))
	default:
		return fmt.Sprintf("pod %s accepts no connections on its ports (%s)", p.Pod, widest.Because)
	}
	return fmt.Sprintf("pod %s accepts %s %s (%s)", p.Pod, port, who, widest.Because)
}

func countClass(ports []exposure.Port, c exposure.Class) int {
	n := 0
	for _, p := range ports {
		if p.Class == c {
			n++
		}
	}
	return n
}

func first(l []string, n int) []string {
	if len(l) > n {
		return append(l[:n:n], "...")
	}
	return l
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
