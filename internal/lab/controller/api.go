package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/threat"
)

// Requests and answers of the lab daemon's API (JSON over a unix socket in the state dir).
type (
	ApplyRequest struct {
		YAML string `json:"yaml"`
		// SkipUnsupported skips policies rampart does not enforce as written instead of
		// failing (model.DecodeOptions.SkipUnsupported); the lab logs each one.
		SkipUnsupported bool `json:"skipUnsupported,omitempty"`
	}
	DeleteRequest struct {
		YAML        string `json:"yaml,omitempty"`
		Kind        string `json:"kind,omitempty"`
		Ref         string `json:"ref,omitempty"`
		AllPolicies bool   `json:"allPolicies,omitempty"`
	}
	LabelRequest struct {
		Kind   string            `json:"kind"` // pod or namespace
		Name   string            `json:"name"` // ns/pod or ns
		Set    map[string]string `json:"set,omitempty"`
		Remove []string          `json:"remove,omitempty"`
	}
	ExecRequest struct {
		Pod  string   `json:"pod"`
		Argv []string `json:"argv"`
	}
	// ExecResult is what a command run in a pod printed (stdout and stderr) and its exit code;
	// a command that ran and failed is a result, not an error.
	ExecResult struct {
		Output   string `json:"output"`
		ExitCode int    `json:"exitCode"`
	}
	apiError struct {
		Error string `json:"error"`
	}
)

// Socket returns the path of a lab's API socket.
func Socket(name string) string { return filepath.Join(Dir(name), "api.sock") }

// Handler serves the API; down is called (once the answer is sent) when a client asks the lab
// to go down.
func (l *Lab) Handler(down func()) http.Handler {
	mux := http.NewServeMux()
	handle := func(path string, fn func(ctx context.Context, body []byte) (any, error)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			out, err := fn(r.Context(), body)
			w.Header().Set("Content-Type", "application/json")
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(apiError{Error: err.Error()})
				return
			}
			_ = json.NewEncoder(w).Encode(out)
		})
	}
	handle("/healthz", func(context.Context, []byte) (any, error) { return "ok", nil })
	handle("/apply", func(ctx context.Context, b []byte) (any, error) {
		var req ApplyRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, err
		}
		return "applied", l.apply(ctx, req.YAML, req.SkipUnsupported)
	})
	handle("/delete", func(ctx context.Context, b []byte) (any, error) {
		var req DeleteRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, err
		}
		return "deleted", l.Delete(ctx, req)
	})
	handle("/label", func(ctx context.Context, b []byte) (any, error) {
		var req LabelRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, err
		}
		return "labelled", l.Label(ctx, req)
	})
	handle("/quarantine", func(ctx context.Context, b []byte) (any, error) {
		var req QuarantineRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, err
		}
		return "done", l.Quarantine(ctx, req)
	})
	handle("/get", func(_ context.Context, b []byte) (any, error) {
		var what string
		if err := json.Unmarshal(b, &what); err != nil {
			return nil, err
		}
		return l.Get(what)
	})
	handle("/probe", func(ctx context.Context, b []byte) (any, error) {
		var req ProbeRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, err
		}
		return l.Probe(ctx, req)
	})
	handle("/exec", func(ctx context.Context, b []byte) (any, error) {
		var req ExecRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, err
		}
		ns, name, err := splitKey(req.Pod)
		if err != nil {
			return nil, err
		}
		out, err := l.fabric.Exec(ctx, ns, name, req.Argv)
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return ExecResult{Output: string(out), ExitCode: exit.ExitCode()}, nil
		}
		if err != nil {
			return nil, err
		}
		return ExecResult{Output: string(out)}, nil
	})
	mux.HandleFunc("/flows", l.serveFlows)
	mux.HandleFunc("/alerts", l.serveAlerts)
	mux.Handle("/explain", flow.LiveHandler(l.liveState))
	mux.HandleFunc("/metrics", l.serveMetrics)
	handle("/down", func(context.Context, []byte) (any, error) {
		go func() { time.Sleep(50 * time.Millisecond); down() }()
		return "going down", nil
	})
	return mux
}

// Apply creates or updates objects. Pods and Services that exist keep their node and addresses
// unless the manifest sets them.
func (l *Lab) Apply(ctx context.Context, y string) error { return l.apply(ctx, y, false) }

func (l *Lab) apply(ctx context.Context, y string, skipUnsupported bool) error {
	warn := func(msg string) { l.logger().Warn("apply: " + msg) }
	objs, err := model.Decode(strings.NewReader(y), "apply", model.DecodeOptions{SkipUnsupported: skipUnsupported, Warn: warn})
	if err != nil {
		return err
	}
	for _, o := range objs {
		if td, ok := o.Obj.(*model.ThreatDefense); ok {
			// Every feed must load before anything changes: the previous configuration stays.
			for i := range td.Spec.Feeds {
				if _, _, err := threat.LoadFeed(&td.Spec.Feeds[i]); err != nil {
					return fmt.Errorf("ThreatDefense %s: spec.feeds[%d]: %w", td.Name, i, err)
				}
			}
		}
	}
	if l.kube != nil {
		var td *model.ThreatDefense
		var rest []model.Object
		for _, o := range objs {
			if t, ok := o.Obj.(*model.ThreatDefense); ok {
				td = t
				continue
			}
			rest = append(rest, o)
		}
		if len(rest) > 0 || td == nil {
			if err := l.kubeApply(ctx, rest); err != nil {
				return err
			}
		}
		if td != nil {
			return l.kubeThreat(ctx, td)
		}
		return nil
	}
	return l.Change(ctx, func(c *model.Cluster) error {
		for _, o := range objs {
			carryOver(c, o)
			c.Apply(o)
		}
		return nil
	})
}

// carryOver keeps what the lab assigned to an object that a manifest updates.
func carryOver(c *model.Cluster, o model.Object) {
	switch o.Kind {
	case model.KindPod:
		old, ok := c.Pods[o.Ref()]
		if !ok {
			return
		}
		pod := o.Obj.(*corev1.Pod)
		if pod.Spec.NodeName == "" {
			pod.Spec.NodeName = old.Spec.NodeName
		}
		if pod.Status.PodIP == "" {
			pod.Status = old.Core().Status
		}
	case model.KindThreatDefense:
		// Each apply is a new generation, so that applying the same document again reloads
		// every feed at once.
		td := o.Obj.(*model.ThreatDefense)
		td.Generation = 1
		if c.ThreatDefense != nil {
			td.Generation = c.ThreatDefense.Generation + 1
		}
	case model.KindService:
		old, ok := c.Services[o.Ref()]
		if !ok {
			return
		}
		if svc := o.Obj.(*corev1.Service); svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = old.Spec.ClusterIP, old.Spec.ClusterIPs
		}
	}
}

// Delete removes objects named by manifests, by kind and name, or every policy.
func (l *Lab) Delete(ctx context.Context, req DeleteRequest) error {
	var targets [][2]string
	if req.YAML != "" {
		objs, err := model.Decode(strings.NewReader(req.YAML), "delete", model.DecodeOptions{AllowUnknownFields: true})
		if err != nil {
			return err
		}
		for _, o := range objs {
			targets = append(targets, [2]string{o.Kind, o.Ref()})
		}
	}
	if req.Kind != "" {
		kind, ok := model.IsKind(req.Kind)
		if !ok {
			return fmt.Errorf("unsupported kind %q", req.Kind)
		}
		targets = append(targets, [2]string{kind, req.Ref})
	}
	allPolicies := func(c *model.Cluster) {
		if !req.AllPolicies {
			return
		}
		for _, k := range model.SortedKeys(c.NetworkPolicies) {
			targets = append(targets, [2]string{model.KindNetworkPolicy, k})
		}
		for _, k := range model.SortedKeys(c.ANPs) {
			targets = append(targets, [2]string{model.KindANP, k})
		}
		for _, k := range model.SortedKeys(c.BANPs) {
			targets = append(targets, [2]string{model.KindBANP, k})
		}
		for _, k := range model.SortedKeys(c.CNPs) {
			targets = append(targets, [2]string{model.KindCNP, k})
		}
	}
	none := fmt.Errorf("nothing to delete: give -f, KIND NS/NAME or --all-policies")
	if l.kube != nil {
		if req.AllPolicies {
			refs, err := l.kube.policyRefs(ctx)
			if err != nil {
				return err
			}
			targets = append(targets, refs...)
		}
		if len(targets) == 0 {
			return none
		}
		var rest [][2]string
		threatGone := false
		for _, t := range targets {
			if t[0] == model.KindThreatDefense {
				threatGone = true // the agents' file: there is one ThreatDefense
				continue
			}
			rest = append(rest, t)
		}
		if len(rest) > 0 {
			if err := l.kubeDelete(ctx, rest); err != nil {
				return err
			}
		}
		if threatGone {
			return l.kubeThreat(ctx, nil)
		}
		return nil
	}
	return l.Change(ctx, func(c *model.Cluster) error {
		allPolicies(c)
		if len(targets) == 0 {
			return none
		}
		var errs []error
		for _, t := range targets {
			if err := c.Delete(t[0], t[1]); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// Label sets and removes labels on a pod or namespace.
func (l *Lab) Label(ctx context.Context, req LabelRequest) error {
	kind, err := labelKind(req.Kind)
	if err != nil {
		return err
	}
	if l.kube != nil {
		return l.kubeLabel(ctx, kind, req)
	}
	return l.Change(ctx, func(c *model.Cluster) error {
		var labels *map[string]string
		switch kind {
		case model.KindPod:
			p, ok := c.Pods[req.Name]
			if !ok {
				return fmt.Errorf("no pod %s", req.Name)
			}
			labels = &p.Labels
		case model.KindNamespace:
			n, ok := c.Namespaces[req.Name]
			if !ok {
				return fmt.Errorf("no namespace %s", req.Name)
			}
			labels = &n.Labels
			for _, k := range req.Remove {
				if k == model.NamespaceNameLabel {
					return fmt.Errorf("label %s is set by the API server and cannot be removed", k)
				}
			}
		}
		if *labels == nil {
			*labels = map[string]string{}
		}
		for k, v := range req.Set {
			(*labels)[k] = v
		}
		for _, k := range req.Remove {
			delete(*labels, k)
		}
		// Validate as the API server would.
		_, err := model.Decode(strings.NewReader(labelCheckDoc(*labels)), "label", model.DecodeOptions{})
		return err
	})
}

// labelKind is the kind a label request names: pods and namespaces carry the labels policy
// selects on.
func labelKind(kind string) (string, error) {
	switch strings.ToLower(kind) {
	case "pod", "pods", "po":
		return model.KindPod, nil
	case "namespace", "namespaces", "ns":
		return model.KindNamespace, nil
	}
	return "", fmt.Errorf("label: kind %q must be pod or namespace", kind)
}

// kubeLabel patches the labels through the API server (which validates them) and waits until
// the change is in force.
func (l *Lab) kubeLabel(ctx context.Context, kind string, req LabelRequest) error {
	rv, err := l.kube.label(ctx, kind, req.Name, req.Set, req.Remove)
	if err != nil {
		return err
	}
	return l.enforced(ctx, rv, nil)
}

func labelCheckDoc(labels map[string]string) string {
	b, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "label-check", "labels": labels}})
	return string(b)
}

// Get lists pods, services, nodes or policies.
func (l *Lab) Get(what string) (any, error) {
	c, rs := l.Snapshot()
	if rs == nil {
		return nil, fmt.Errorf("lab is not up")
	}
	switch strings.ToLower(what) {
	case "pods", "pod", "po":
		return podsView(c, rs), nil
	case "services", "service", "svc":
		return servicesView(rs), nil
	case "nodes", "node", "no":
		nodes := nodesView(c, rs)
		agents := l.AgentStates(context.Background())
		for i := range nodes {
			nodes[i].Netns = l.fabric.NodeNetns(nodes[i].Name)
			if a, ok := agents[nodes[i].Name]; ok {
				nodes[i].Agent = &a
			}
		}
		return nodes, nil
	case "policies", "policy", "netpol":
		return policiesView(c), nil
	}
	return nil, fmt.Errorf("get: want pods, services, nodes or policies, not %q", what)
}

// PodView is one pod as `lab get pods -o json` shows it.
type PodView struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Node        string            `json:"node"`
	IP          string            `json:"ip"`
	HostNetwork bool              `json:"hostNetwork,omitempty"`
	Labels      map[string]string `json:"labels"`
	Ports       []TopoPort        `json:"ports"`
}

func podsView(c *model.Cluster, rs *ir.Ruleset) []PodView {
	var out []PodView
	for _, p := range rs.Pods {
		v := PodView{Namespace: p.Namespace, Name: p.Name, Node: p.Node, HostNetwork: p.HostNetwork, Labels: c.Pods[p.Key()].Labels, Ports: []TopoPort{}}
		if len(p.IPs) > 0 {
			v.IP = p.IP().String()
		}
		if v.Labels == nil {
			v.Labels = map[string]string{}
		}
		for _, cp := range p.Ports {
			v.Ports = append(v.Ports, TopoPort{Name: cp.Name, Port: cp.Port, Protocol: cp.Protocol.String()})
		}
		out = append(out, v)
	}
	return out
}

// ServiceView is one Service port as `lab get services` shows it.
type ServiceView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	ClusterIP string `json:"clusterIP"`
	Port      uint16 `json:"port"`
	Protocol  string `json:"protocol"`
	// NodePort, and ExternalIPs: the external and load-balancer addresses, as reached from
	// the external client (lab probe --from external).
	NodePort    uint16   `json:"nodePort,omitempty"`
	ExternalIPs []string `json:"externalIPs,omitempty"`
	Backends    []string `json:"backends"`
}

func servicesView(rs *ir.Ruleset) []ServiceView {
	out := []ServiceView{}
	for _, s := range rs.Services {
		for _, sp := range s.Ports {
			v := ServiceView{Namespace: s.Namespace, Name: s.Name, Port: sp.Port, Protocol: sp.Protocol.String(), Backends: []string{}}
			if len(s.ClusterIPs) > 0 {
				v.ClusterIP = s.ClusterIPs[0].String()
			}
			v.NodePort = sp.NodePort
			for _, ip := range append(slices.Clone(s.ExternalIPs), s.LoadBalancerIPs...) {
				v.ExternalIPs = append(v.ExternalIPs, ip.String())
			}
			for _, b := range sp.Backends {
				v.Backends = append(v.Backends, fmt.Sprintf("%s:%d", b.IP, b.Port))
			}
			out = append(out, v)
		}
	}
	return out
}

// NodeView is one node.
type NodeView struct {
	Name    string            `json:"name"`
	IP      string            `json:"ip"`
	PodCIDR string            `json:"podCIDR"`
	Labels  map[string]string `json:"labels"`
	Netns   string            `json:"netns"`
	Agent   *AgentView        `json:"agent,omitempty"`
}

func nodesView(c *model.Cluster, rs *ir.Ruleset) []NodeView {
	var out []NodeView
	for _, n := range rs.Nodes {
		v := NodeView{Name: n.Name, Labels: c.Nodes[n.Name].Labels}
		if len(n.IPs) > 0 {
			v.IP = n.IPs[0].String()
		}
		if len(n.PodCIDRs) > 0 {
			v.PodCIDR = n.PodCIDRs[0].String()
		}
		out = append(out, v)
	}
	return out
}

// PolicyView is one policy object.
type PolicyView struct {
	Kind      string `json:"kind"`
	Tier      string `json:"tier,omitempty"` // a ClusterNetworkPolicy's spec.tier
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Priority  *int32 `json:"priority,omitempty"`
	// Staged policies (rampart.io/staged: "true") are not enforced; flow records say what
	// they would decide.
	Staged bool `json:"staged,omitempty"`
}

// policiesView lists the policies in precedence order: the admin tier, the NetworkPolicies,
// the baseline tier (model.Cluster.AdminTier and BaselineTier, the compiler's order).
func policiesView(c *model.Cluster) []PolicyView {
	view := func(o model.Object) PolicyView {
		m := o.Meta()
		v := PolicyView{Kind: o.Kind, Namespace: m.Namespace, Name: m.Name, Staged: model.IsStaged(m)}
		if p, ok := model.Priority(o.Obj); ok {
			v.Priority = &p
		}
		if cnp, ok := o.Obj.(*cnpv1alpha2.ClusterNetworkPolicy); ok {
			v.Tier = string(cnp.Spec.Tier)
		}
		return v
	}
	out := []PolicyView{}
	for _, o := range c.AdminTier() {
		out = append(out, view(o))
	}
	for _, k := range model.SortedKeys(c.NetworkPolicies) {
		out = append(out, view(model.Object{Kind: model.KindNetworkPolicy, Obj: c.NetworkPolicies[k]}))
	}
	for _, o := range c.BaselineTier() {
		out = append(out, view(o))
	}
	return out
}

// Client talks to a lab daemon.
type Client struct {
	name string
	http *http.Client
}

// NewClient returns a client for the named lab.
func NewClient(name string) *Client {
	sock := Socket(name)
	return &Client{name: name, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}}
}

// Call posts req to path and decodes the answer into out.
func (c *Client) Call(ctx context.Context, path string, req, out any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "http://lab"+path, strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			return fmt.Errorf("lab %q: %s", c.name, resp.Status)
		}
		return errors.New(e.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) do(ctx context.Context, method, url string, body io.Reader) (*http.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("lab %q is not running (no answer on %s): %w", c.name, Socket(c.name), err)
	}
	return resp, nil
}

// Get issues GET path?q and hands the answer's body to fn (streamed: fn reads as the lab
// writes).
func (c *Client) Get(ctx context.Context, path string, q url.Values, fn func(io.Reader) error) error {
	resp, err := c.do(ctx, http.MethodGet, "http://lab"+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("lab %q: %s", c.name, strings.TrimSpace(string(b)))
	}
	return fn(resp.Body)
}
