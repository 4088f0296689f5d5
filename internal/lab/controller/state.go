package controller

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/rampart-sec/rampart/internal/model"
)

// StateRoot holds one directory per lab: its objects, settings, daemon socket and PID.
var StateRoot = "/run/rampart/lab"

// Settings are fixed when a lab comes up.
type Settings struct {
	Name      string `json:"name"`
	Nodes     int    `json:"nodes"`
	Dataplane string `json:"dataplane"` // iptables, ebpf or none
	// Kube: the lab's objects live in a real API server and each node runs `rampart agent`.
	Kube bool `json:"kube,omitempty"`
	// NoFlows turns flow records off (the dataplanes write no flow events): measurements of
	// what records cost.
	NoFlows bool `json:"noFlows,omitempty"`
	// KubeProxy (iptables dataplane): kube-proxy, run by someone else in the node namespaces
	// against an API server holding the lab's Services, translates Services; the dataplane
	// only enforces policy, as beside kube-proxy on a real node (measurements against it).
	KubeProxy bool `json:"kubeProxy,omitempty"`
	// FlowMaxConnections bounds each agent's flow aggregation (0: the agent's default).
	FlowMaxConnections int `json:"flowMaxConnections,omitempty"`
	// Log receives the node agents' logs (not saved; default: discarded).
	Log *slog.Logger `json:"-"`
}

var labName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$`)

// ValidateName checks a lab name: it prefixes every namespace and link the lab creates.
func ValidateName(name string) error {
	if !labName.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1 to 16 lower-case letters, digits and '-'", name)
	}
	return nil
}

// Dir returns the lab's state directory.
func Dir(name string) string { return filepath.Join(StateRoot, name) }

// SaveState writes the settings and the cluster's objects, replacing the files atomically.
func SaveState(s Settings, c *model.Cluster) error {
	dir := Dir(s.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := yaml.Marshal(s)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, "settings.yaml"), b); err != nil {
		return err
	}
	objs, err := MarshalCluster(c)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, "objects.yaml"), objs)
}

// LoadState reads what SaveState wrote.
func LoadState(name string) (Settings, *model.Cluster, error) {
	var s Settings
	b, err := os.ReadFile(filepath.Join(Dir(name), "settings.yaml"))
	if err != nil {
		return s, nil, fmt.Errorf("lab %q: %w", name, err)
	}
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		return s, nil, fmt.Errorf("lab %q settings: %w", name, err)
	}
	f, err := os.Open(filepath.Join(Dir(name), "objects.yaml"))
	if err != nil {
		return s, nil, err
	}
	defer f.Close()
	objs, err := model.Decode(f, f.Name(), model.DecodeOptions{})
	if err != nil {
		return s, nil, err
	}
	return s, model.FromObjects(objs), nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// MarshalCluster renders every object as multi-document YAML, in a stable order.
func MarshalCluster(c *model.Cluster) ([]byte, error) {
	var buf bytes.Buffer
	err := errors.Join(
		marshalAll(&buf, model.KindNamespace, c.Namespaces),
		marshalAll(&buf, model.KindNode, c.Nodes),
		marshalAll(&buf, model.KindPod, c.Pods),
		marshalAll(&buf, model.KindService, c.Services),
		marshalAll(&buf, model.KindEndpointSlice, c.EndpointSlices),
		marshalAll(&buf, model.KindNetworkPolicy, c.NetworkPolicies),
		marshalAll(&buf, model.KindANP, c.ANPs),
		marshalAll(&buf, model.KindBANP, c.BANPs),
		marshalAll(&buf, model.KindCNP, c.CNPs),
	)
	if td := c.ThreatDefense; td != nil {
		err = errors.Join(err, marshalAll(&buf, model.KindThreatDefense, map[string]*model.ThreatDefense{td.Name: td}))
	}
	return buf.Bytes(), err
}

// marshalAll appends one kind's objects, setting the apiVersion and kind the typed objects
// leave empty.
func marshalAll[T runtime.Object](buf *bytes.Buffer, kind string, m map[string]T) error {
	for _, k := range model.SortedKeys(m) {
		o := m[k]
		o.GetObjectKind().SetGroupVersionKind(schema.FromAPIVersionAndKind(model.APIVersion(kind), kind))
		b, err := yaml.Marshal(o)
		if err != nil {
			return fmt.Errorf("%s %s: %w", kind, k, err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return nil
}
