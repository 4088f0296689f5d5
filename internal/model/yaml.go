package model

import (
	"encoding/json"
	"fmt"

	yaml3 "go.yaml.in/yaml/v3"
)

// YAMLToJSON converts one YAML document to JSON with YAML 1.2 rules, where only true and false
// are booleans. The YAML 1.1 rules of sigs.k8s.io/yaml read y, n, yes, no, on and off as
// booleans, which breaks namespaces named "y" or "n" (the upstream e2e suite's x, y, z).
// Duplicate keys are errors.
func YAMLToJSON(raw []byte) ([]byte, error) {
	var v any
	if err := yaml3.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	v, err := jsonable(v, "")
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// jsonable turns YAML-decoded values into ones encoding/json accepts: maps keyed by strings.
func jsonable(v any, path string) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			c, err := jsonable(e, path+"."+k)
			if err != nil {
				return nil, err
			}
			t[k] = c
		}
		return t, nil
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			ks := fmt.Sprint(k)
			if _, dup := m[ks]; dup {
				return nil, fmt.Errorf("%s: duplicate key %q", path, ks)
			}
			c, err := jsonable(e, path+"."+ks)
			if err != nil {
				return nil, err
			}
			m[ks] = c
		}
		return m, nil
	case []any:
		for i, e := range t {
			c, err := jsonable(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			t[i] = c
		}
		return t, nil
	}
	return v, nil
}
