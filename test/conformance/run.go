package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rampart-sec/rampart/internal/model"
)

// Pair is one expected probe.
type Pair struct {
	From, To string // "ns/pod"
	Port     int32
	Protocol string
}

func (p Pair) String() string { return fmt.Sprintf("%s -> %s %d/%s", p.From, p.To, p.Port, p.Protocol) }

// LoadBase reads a case's base cluster from the suite directory.
func LoadBase(dir string, c Case) (*model.Cluster, error) {
	objs, err := model.Load([]string{filepath.Join(dir, c.Base)}, model.LoadOptions{})
	if err != nil {
		return nil, err
	}
	return model.FromObjects(objs), nil
}

// ApplyTo performs the step's changes on a cluster: apply, then delete, then relabel.
func (s Step) ApplyTo(c *model.Cluster) error {
	if strings.TrimSpace(s.Apply) != "" {
		objs, err := model.Decode(strings.NewReader(s.Apply), "step", model.DecodeOptions{})
		if err != nil {
			return err
		}
		for _, o := range objs {
			c.Apply(o)
		}
	}
	for _, d := range s.Delete {
		kind, ref, ok := strings.Cut(strings.TrimSpace(d), " ")
		if !ok {
			return fmt.Errorf("delete %q: want \"Kind ns/name\" or \"Kind name\"", d)
		}
		if err := c.Delete(kind, strings.TrimSpace(ref)); err != nil {
			return err
		}
	}
	for _, l := range s.Label {
		var labels *map[string]string
		switch strings.ToLower(l.Kind) {
		case "pod":
			p, ok := c.Pods[l.Name]
			if !ok {
				return fmt.Errorf("label: no pod %s", l.Name)
			}
			labels = &p.Labels
		case "namespace":
			n, ok := c.Namespaces[l.Name]
			if !ok {
				return fmt.Errorf("label: no namespace %s", l.Name)
			}
			labels = &n.Labels
		default:
			return fmt.Errorf("label: kind %q must be pod or namespace", l.Kind)
		}
		if *labels == nil {
			*labels = map[string]string{}
		}
		for k, v := range l.Set {
			(*labels)[k] = v
		}
		for _, k := range l.Remove {
			delete(*labels, k)
		}
		if strings.ToLower(l.Kind) == "namespace" {
			(*labels)[model.NamespaceNameLabel] = l.Name // the API server keeps it
		}
	}
	return nil
}

// Expected expands a probe set over pods (sorted "ns/pod" keys) into the expected outcome of
// every pair it checks.
func (ps ProbeSet) Expected(pods []string) (map[Pair]bool, error) {
	out := map[Pair]bool{}
	proto := strings.ToUpper(ps.Protocol)
	if ps.Default != nil {
		for _, f := range pods {
			for _, t := range pods {
				if f != t {
					out[Pair{f, t, ps.Port, proto}] = *ps.Default
				}
			}
		}
		for _, e := range ps.Expect {
			n := 0
			for _, f := range pods {
				for _, t := range pods {
					if f != t && MatchPattern(e.From, f) && MatchPattern(e.To, t) {
						out[Pair{f, t, ps.Port, proto}] = e.Allowed
						n++
					}
				}
			}
			if n == 0 && !(e.From == e.To && !strings.Contains(e.From, "*")) {
				return nil, fmt.Errorf("expectation %s -> %s matches no pair of pods", e.From, e.To)
			}
		}
		return out, nil
	}
	for _, e := range ps.Expect {
		if strings.Contains(e.From+e.To, "*") {
			return nil, fmt.Errorf("expectation %s -> %s: patterns need a default", e.From, e.To)
		}
		if !contains(pods, e.From) || !contains(pods, e.To) {
			return nil, fmt.Errorf("expectation %s -> %s names a pod the cluster does not have", e.From, e.To)
		}
		out[Pair{e.From, e.To, ps.Port, proto}] = e.Allowed
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// PodKeys returns the cluster's pods as sorted "ns/pod" keys.
func PodKeys(c *model.Cluster) []string {
	keys := model.SortedKeys(c.Pods)
	sort.Strings(keys)
	return keys
}

// Suites lists the suite directories under cases/.
func Suites(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	return out, nil
}
