// Package conformance holds rampart's own conformance suites: transcriptions of the upstream
// Kubernetes NetworkPolicy e2e tests and the network-policy-api ANP/BANP conformance tests,
// expressed as data (cases/*.yaml) and run against the evaluator and, in the lab, the dataplanes.
package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rampart-sec/rampart/internal/model"
)

// Case is one upstream test, as a sequence of steps over a base cluster.
type Case struct {
	// Name is a short kebab-case id, unique within its suite.
	Name string `json:"name"`
	// Upstream names the upstream test (its It(...) text or test ShortName) so a reader can find it.
	Upstream string `json:"upstream"`
	// Base names the base cluster manifest in cases/<suite>/ (for example "base.yaml").
	Base string `json:"base"`
	// Steps run in order; each changes the cluster, then checks reachability.
	Steps []Step `json:"steps"`
}

// Step changes the cluster state and then checks probes.
type Step struct {
	// Description says what this step does, in words.
	Description string `json:"description,omitempty"`
	// Apply is a multi-document YAML string of objects to create or update.
	Apply string `json:"apply,omitempty"`
	// Delete lists objects to delete, as "Kind ns/name" or "Kind name" for cluster-scoped kinds.
	Delete []string `json:"delete,omitempty"`
	// Label changes labels: each entry relabels one pod or namespace.
	Label []LabelChange `json:"label,omitempty"`
	// Probes are checked after the changes.
	Probes []ProbeSet `json:"probes,omitempty"`
}

// LabelChange sets and removes labels on one object, like `kubectl label`.
type LabelChange struct {
	// Kind is "pod" or "namespace".
	Kind string `json:"kind"`
	// Name is "ns/pod" for pods and "ns" for namespaces.
	Name string `json:"name"`
	// Set adds or overwrites labels.
	Set map[string]string `json:"set,omitempty"`
	// Remove deletes labels by key.
	Remove []string `json:"remove,omitempty"`
}

// ProbeSet checks one port/protocol over a set of pod pairs.
//
// With Default set, every ordered pair of distinct pods in the base cluster is probed, starting
// from that expectation, and then Expect entries override it in order (later wins), exactly like
// upstream's Reachability.ExpectPeer calls. Without Default, only the Expect entries are probed
// (the ANP conformance style of single connections).
type ProbeSet struct {
	Port     int32         `json:"port"`
	Protocol string        `json:"protocol"` // TCP, UDP or SCTP
	Default  *bool         `json:"default,omitempty"`
	Expect   []Expectation `json:"expect,omitempty"`
}

// Expectation sets the expected outcome for pairs matching From and To. Each is "ns/pod",
// "ns/*" or "*/*" (patterns are allowed only with a Default).
type Expectation struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Allowed bool   `json:"allowed"`
}

// Load reads every case file (*.yaml except base*.yaml) in dir, sorted by name.
func Load(dir string) ([]Case, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var cases []Case
	seen := map[string]string{}
	for _, p := range paths {
		if strings.HasPrefix(filepath.Base(p), "base") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var c Case
		js, err := model.YAMLToJSON(b) // YAML 1.2: namespaces named y and n stay strings
		if err != nil {
			return nil, fmt.Errorf("case %s: %w", p, err)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("case %s: %w", p, err)
		}
		if c.Name == "" || c.Base == "" || len(c.Steps) == 0 {
			return nil, fmt.Errorf("case %s: name, base and steps are required", p)
		}
		if prev, ok := seen[c.Name]; ok {
			return nil, fmt.Errorf("case %s: name %q also used by %s", p, c.Name, prev)
		}
		seen[c.Name] = p
		cases = append(cases, c)
	}
	return cases, nil
}

// MatchPattern reports whether "ns/pod" matches a pattern "ns/pod", "ns/*" or "*/*".
func MatchPattern(pattern, pod string) bool {
	pns, pname, ok1 := strings.Cut(pattern, "/")
	ns, name, ok2 := strings.Cut(pod, "/")
	if !ok1 || !ok2 {
		return false
	}
	return (pns == "*" || pns == ns) && (pname == "*" || pname == name)
}
