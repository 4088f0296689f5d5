package model

import (
	"encoding/json"
	"fmt"
)

// convertLegacyANP rewrites AdminNetworkPolicy peers written in the network-policy-api v0.1.1
// shape into the current v1alpha1 shape, so manifests of either release load:
//
//	namespaces: {namespaceSelector: S}                  ->  namespaces: S
//	pods: {namespaces: {namespaceSelector: S}, podSelector: P}  ->  pods: {namespaceSelector: S, podSelector: P}
//
// sameLabels and notSameLabels were removed upstream in v0.1.5 and are rejected with a clear error.
func convertLegacyANP(js []byte) ([]byte, error) {
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err != nil {
		return nil, err
	}
	spec, _ := obj["spec"].(map[string]any)
	if spec == nil {
		return js, nil
	}
	changed := false
	for _, dir := range []struct{ rules, peers string }{{"ingress", "from"}, {"egress", "to"}} {
		rules, _ := spec[dir.rules].([]any)
		for i, r := range rules {
			rule, _ := r.(map[string]any)
			peers, _ := rule[dir.peers].([]any)
			for j, p := range peers {
				peer, _ := p.(map[string]any)
				path := fmt.Sprintf("%s[%d].%s[%d]", dir.rules, i, dir.peers, j)
				c, err := convertLegacyPeer(peer, path)
				if err != nil {
					return nil, err
				}
				changed = changed || c
			}
		}
	}
	if !changed {
		return js, nil
	}
	return json.Marshal(obj)
}

func convertLegacyPeer(peer map[string]any, path string) (bool, error) {
	changed := false
	if ns, ok := peer["namespaces"].(map[string]any); ok {
		sel, c, err := legacyNamespaces(ns, path+".namespaces")
		if err != nil {
			return false, err
		}
		if c {
			peer["namespaces"] = sel
			changed = true
		}
	}
	if pods, ok := peer["pods"].(map[string]any); ok {
		if ns, ok := pods["namespaces"].(map[string]any); ok {
			sel, _, err := legacyNamespaces(ns, path+".pods.namespaces")
			if err != nil {
				return false, err
			}
			delete(pods, "namespaces")
			pods["namespaceSelector"] = sel
			changed = true
		}
	}
	return changed, nil
}

// legacyNamespaces unwraps a v0.1.1 NamespacedPeer. It reports false when ns is already a
// plain label selector.
func legacyNamespaces(ns map[string]any, path string) (any, bool, error) {
	for _, k := range []string{"sameLabels", "notSameLabels"} {
		if _, ok := ns[k]; ok {
			return nil, false, fmt.Errorf("%s.%s: not supported (removed from network-policy-api in v0.1.5); use namespace selectors", path, k)
		}
	}
	sel, ok := ns["namespaceSelector"]
	if !ok {
		return ns, false, nil
	}
	if len(ns) != 1 {
		return nil, false, fmt.Errorf("%s: namespaceSelector cannot be combined with other fields", path)
	}
	return sel, true, nil
}
