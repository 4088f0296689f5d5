package randpolicy

import (
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Shrink reduces a failing policy set to a minimal one that still fails: it drops whole
// documents while fails still reports the failure, then a document's ingress or egress rules
// (all, or one at a time), then a rule's peers and ports (all, or one at a time). fails must be deterministic
// for the result to be minimal; it is called O(n²) times in the worst case for n parts.
// Documents are re-encoded with YAML 1.2 rules, as rampart decodes them (a label value "no"
// stays a string).
func Shrink(y string, fails func(string) bool) string {
	docs := splitDocs(y)
	// Whole documents.
	for i := 0; i < len(docs); {
		try := append(append([]string{}, docs[:i]...), docs[i+1:]...)
		if fails(strings.Join(try, "---\n")) {
			docs = try
			continue
		}
		i++
	}
	// Parts of documents, innermost last: rules, then each rule's peers and ports.
	for i := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(docs[i]), &obj); err != nil {
			continue
		}
		spec, _ := obj["spec"].(map[string]any)
		if spec == nil {
			continue
		}
		render := func() string {
			b, err := yaml.Marshal(obj)
			if err != nil {
				return docs[i]
			}
			return string(b)
		}
		attempt := func() bool {
			try := append([]string{}, docs...)
			try[i] = render()
			if fails(strings.Join(try, "---\n")) {
				docs = try
				return true
			}
			return false
		}
		for _, dir := range []string{"ingress", "egress"} {
			dropKey(spec, dir, attempt)
			shrinkList(spec, dir, attempt)
			rules, _ := spec[dir].([]any)
			for _, r := range rules {
				rule, _ := r.(map[string]any)
				if rule == nil {
					continue
				}
				for _, field := range []string{"from", "to", "ports"} {
					dropKey(rule, field, attempt)
					shrinkList(rule, field, attempt)
				}
			}
		}
	}
	return strings.Join(docs, "---\n")
}

// shrinkList removes the elements of m[key] one at a time, keeping each removal attempt
// accepts (the list must keep one element: an empty list can mean something else, such as
// "no peers" versus "all peers").
func shrinkList(m map[string]any, key string, attempt func() bool) {
	list, _ := m[key].([]any)
	for j := 0; j < len(list) && len(list) > 1; {
		next := append(append([]any{}, list[:j]...), list[j+1:]...)
		m[key] = next
		if attempt() {
			list = next
			continue
		}
		m[key] = list
		j++
	}
}

// dropKey tries the object without m[key] (a NetworkPolicy rule without "ports" allows every
// port; where a field is required the candidate does not compile and is not taken).
func dropKey(m map[string]any, key string, attempt func() bool) {
	v, ok := m[key]
	if !ok {
		return
	}
	delete(m, key)
	if !attempt() {
		m[key] = v
	}
}

func splitDocs(y string) []string {
	var docs []string
	for _, d := range strings.Split(y, "\n---") {
		d = strings.TrimPrefix(strings.TrimSpace(d), "---")
		if strings.TrimSpace(d) != "" {
			docs = append(docs, strings.TrimSpace(d)+"\n")
		}
	}
	return docs
}
