package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rampart-sec/rampart/internal/agent"
	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/lab/apiserver"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/source/kube"
)

// kubeMode runs a lab the way a cluster runs: its objects live in a real API server, and each
// node is enforced by a `rampart agent` process (the DaemonSet's) that watches it. The lab
// daemon plays scheduler and kubelet: it places pods created through the API, reports their
// addresses, builds their namespaces, and restarts agents that exit.
type kubeMode struct {
	srv  *apiserver.Server
	cfg  *rest.Config
	cs   kubernetes.Interface
	dyn  dynamic.Interface
	src  *kube.Source
	log  *slog.Logger
	exe  string // the rampart binary the agents run
	pins string // bpffs mount for eBPF agents

	mu       sync.Mutex
	agents   map[string]*agentProc
	realised uint64 // the source resourceVersion the fabric was last built from
	stopping bool
	wg       sync.WaitGroup
}

// agentProc is one node agent process under supervision.
type agentProc struct {
	node, sock, log string
	client          *agent.Client
	mu              sync.Mutex
	cmd             *exec.Cmd
	restarts        int
}

// apiserverDir holds a --kube lab's API server: etcd data, certificates, ports, kubeconfig.
func apiserverDir(name string) string { return filepath.Join(Dir(name), "apiserver") }

// Kubeconfig returns the path of a lab's kubeconfig (--kube labs).
func Kubeconfig(name string) string { return filepath.Join(apiserverDir(name), "kubeconfig") }

func pidFile(name string) string { return filepath.Join(Dir(name), "pids") }

// StartKube brings a --kube lab up: the API server, the CRDs, the lab's namespaces, its
// objects registered in the API server, and one agent process per node (exe is the rampart
// binary), and returns once every agent is ready.
func (l *Lab) StartKube(ctx context.Context, exe string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	log := l.logger()
	k := &kubeMode{log: log, exe: exe, agents: map[string]*agentProc{}}
	l.kube = k
	if err := l.StartAPIServer(ctx); err != nil {
		return err
	}
	var err error
	if k.cfg, err = clientcmd.BuildConfigFromFlags("", k.srv.Kubeconfig); err != nil {
		return err
	}
	// The lab writes its objects in bursts to a server of its own: no client-side throttling.
	k.cfg.QPS, k.cfg.Burst = 1000, 1000
	k.cfg.WarningHandler = rest.NoWarnings{}
	k.cs = kubernetes.NewForConfigOrDie(k.cfg)
	k.dyn = dynamic.NewForConfigOrDie(k.cfg)
	if err := apiserver.InstallCRDs(ctx, k.cfg); err != nil {
		return err
	}
	c := l.cluster.Clone()
	if err := l.realiseFabric(ctx, c); err != nil {
		return err
	}
	if err := k.register(ctx, c); err != nil {
		return fmt.Errorf("register the lab's objects: %w", err)
	}
	if l.settings.Dataplane == string(dataplane.KindEBPF) {
		k.pins = filepath.Join(Dir(l.settings.Name), "bpf")
		if err := os.MkdirAll(k.pins, 0o700); err != nil {
			return err
		}
		if err := unix.Mount("bpf", k.pins, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount a bpffs for the agents' pins: %w", err)
		}
	}
	if k.src, err = kube.NewFromConfig(k.cfg, kube.Options{Logger: log, CRDPoll: time.Second, HealthPoll: time.Second}); err != nil {
		return err
	}
	changes := k.src.Subscribe(l.agentCtx)
	go func() { _ = k.src.Run(l.agentCtx) }()
	select {
	case <-k.src.Synced():
	case <-ctx.Done():
		return ctx.Err()
	}
	go l.follow(changes)
	for _, n := range model.SortedKeys(c.Nodes) {
		k.startAgent(l, n)
	}
	return k.waitReady(ctx)
}

// follow keeps the lab's view, its pods' placement and its namespaces in step with the API
// server: pods created through the API get a node and an address, as a scheduler and kubelet
// would give them.
func (l *Lab) follow(changes <-chan struct{}) {
	k := l.kube
	for {
		select {
		case <-l.agentCtx.Done():
			return
		case <-changes:
		}
		rv := k.src.ResourceVersion()
		api, _ := k.src.Snapshot()
		if k.finishDeletions(l.agentCtx, api) {
			continue // the deletions bring their own events
		}
		c := api.Clone()
		l.mu.Lock()
		// The namespaces first, then the placement in the API: agents learn a pod's address
		// once its interface exists (and guard any interface before that).
		err := l.realiseFabric(l.agentCtx, c)
		if err == nil {
			err = k.writeBack(l.agentCtx, api, c)
		}
		if err == nil {
			k.mu.Lock()
			k.realised = max(k.realised, rv)
			k.mu.Unlock()
		}
		l.mu.Unlock()
		if err != nil {
			k.log.Error("follow the API server", "err", err)
		}
	}
}

// finishDeletions does what kubelet and the namespace controller do once an object is marked
// for deletion: a terminating pod's containers stop (here: at once) and its object goes; a
// terminating namespace's contents are deleted and the namespace finalized. It reports whether
// it deleted anything.
func (k *kubeMode) finishDeletions(ctx context.Context, api *model.Cluster) bool {
	did := false
	for _, ns := range api.Namespaces {
		if ns.DeletionTimestamp != nil {
			if err := k.finalizeNamespace(ctx, ns.Name); err != nil {
				k.log.Error("finalize namespace", "namespace", ns.Name, "err", err)
			}
			did = true
		}
	}
	for key, p := range api.Pods {
		if p.DeletionTimestamp != nil {
			err := k.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			if err != nil && !apierrors.IsNotFound(err) {
				k.log.Error("delete terminating pod", "pod", key, "err", err)
			}
			did = true
		}
	}
	return did
}

// finalizeNamespace deletes what a namespace holds and removes its finalizer, as the namespace
// controller would (there is none in the lab).
func (k *kubeMode) finalizeNamespace(ctx context.Context, name string) error {
	var errs []error
	for _, inner := range []string{model.KindPod, model.KindService, model.KindEndpointSlice, model.KindNetworkPolicy} {
		if err := k.resource(inner, name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{}); err != nil {
			errs = append(errs, err)
		}
	}
	nso, err := k.cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if nso.DeletionTimestamp != nil && len(nso.Spec.Finalizers) > 0 {
		nso.Spec.Finalizers = nil
		if _, err := k.cs.CoreV1().Namespaces().Finalize(ctx, nso, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeBack records the placement of pods the API server holds without one: a binding to the
// node, then the address in the status.
func (k *kubeMode) writeBack(ctx context.Context, api, placed *model.Cluster) error {
	var errs []error
	for key, p := range api.Pods {
		q := placed.Pods[key]
		if p.Spec.NodeName == "" {
			b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}, Target: corev1.ObjectReference{Kind: "Node", Name: q.Spec.NodeName}}
			if err := k.cs.CoreV1().Pods(p.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsConflict(err) {
				errs = append(errs, fmt.Errorf("bind pod %s: %w", key, err))
				continue
			}
		}
		if p.Status.PodIP != q.Status.PodIP {
			cur, err := k.cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			cur.Status = q.Core().Status
			if _, err := k.cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("pod %s status: %w", key, err))
			}
		}
	}
	return errors.Join(errs...)
}

// realiseFabric builds the namespaces of c (placed) and the connect-time balancer, and makes c
// the lab's view. In --kube labs enforcement is the agents' business.
func (l *Lab) realiseFabric(ctx context.Context, c *model.Cluster) error {
	rs, _, err := l.buildNetwork(ctx, c)
	if err != nil {
		return err
	}
	if err := l.syncSockLB(rs); err != nil {
		return err
	}
	l.cluster, l.rs, l.rsAt = c, rs, time.Now()
	return SaveState(l.settings, c)
}

// resources names the API resource of each of the model's kinds.
var resources = map[string]string{
	model.KindNamespace: "namespaces", model.KindNode: "nodes", model.KindPod: "pods", model.KindService: "services",
	model.KindEndpointSlice: "endpointslices", model.KindNetworkPolicy: "networkpolicies",
	model.KindANP: "adminnetworkpolicies", model.KindBANP: "baselineadminnetworkpolicies",
	model.KindCNP: "clusternetworkpolicies",
}

func (k *kubeMode) resource(kind, namespace string) dynamic.ResourceInterface {
	gvr := schema.FromAPIVersionAndKind(model.APIVersion(kind), kind).GroupVersion().WithResource(resources[kind])
	if model.Namespaced(kind) {
		return k.dyn.Resource(gvr).Namespace(namespace)
	}
	return k.dyn.Resource(gvr)
}

// labImage stands for the image of lab containers that name none: the lab's servers are not
// containers, but the API server requires an image.
const labImage = "localhost/rampart-lab-server:latest"

func toUnstructured(kind string, obj any) (*unstructured.Unstructured, error) {
	if mp, ok := obj.(*model.Pod); ok {
		obj = mp.Core()
	}
	if p, ok := obj.(*corev1.Pod); ok {
		p = p.DeepCopy()
		for i := range p.Spec.Containers {
			if p.Spec.Containers[i].Image == "" {
				p.Spec.Containers[i].Image = labImage
			}
		}
		obj = p
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(model.APIVersion(kind))
	u.SetKind(kind)
	u.SetResourceVersion("")
	u.SetUID("")
	u.SetCreationTimestamp(metav1.Time{})
	return u, nil
}

// register creates the lab's objects, namespaces and nodes first, with the status the lab gave
// nodes and pods.
func (k *kubeMode) register(ctx context.Context, c *model.Cluster) error {
	var objs []model.Object
	add := func(kind string, keys []string, get func(string) any) {
		for _, key := range keys {
			objs = append(objs, model.Object{Kind: kind, Obj: get(key)})
		}
	}
	add(model.KindNamespace, model.SortedKeys(c.Namespaces), func(k string) any { return c.Namespaces[k] })
	add(model.KindNode, model.SortedKeys(c.Nodes), func(k string) any { return c.Nodes[k] })
	add(model.KindPod, model.SortedKeys(c.Pods), func(k string) any { return c.Pods[k] })
	add(model.KindService, model.SortedKeys(c.Services), func(k string) any { return c.Services[k] })
	add(model.KindEndpointSlice, model.SortedKeys(c.EndpointSlices), func(k string) any { return c.EndpointSlices[k] })
	add(model.KindNetworkPolicy, model.SortedKeys(c.NetworkPolicies), func(k string) any { return c.NetworkPolicies[k] })
	add(model.KindANP, model.SortedKeys(c.ANPs), func(k string) any { return c.ANPs[k] })
	add(model.KindBANP, model.SortedKeys(c.BANPs), func(k string) any { return c.BANPs[k] })
	add(model.KindCNP, model.SortedKeys(c.CNPs), func(k string) any { return c.CNPs[k] })
	_, _, err := k.write(ctx, objs)
	return err
}

// write creates or updates objects through the API server and returns the highest
// resourceVersion the writes produced, overall and per kind. A pod that exists keeps its spec
// (immutable in the API): its labels and annotations are updated.
func (k *kubeMode) write(ctx context.Context, objs []model.Object) (uint64, map[string]uint64, error) {
	var maxRV uint64
	perKind := map[string]uint64{}
	note := func(u *unstructured.Unstructured) {
		if rv, err := strconv.ParseUint(u.GetResourceVersion(), 10, 64); err == nil {
			maxRV = max(maxRV, rv)
			perKind[u.GetKind()] = max(perKind[u.GetKind()], rv)
		}
	}
	var errs []error
	for _, o := range objs {
		u, err := toUnstructured(o.Kind, o.Obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		status, hasStatus := u.Object["status"]
		r := k.resource(o.Kind, u.GetNamespace())
		cur, err := r.Get(ctx, u.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			cur, err = r.Create(ctx, u, metav1.CreateOptions{FieldManager: "rampart-lab"})
		case err == nil && o.Kind == model.KindPod:
			cur.SetLabels(u.GetLabels())
			cur.SetAnnotations(u.GetAnnotations())
			cur, err = r.Update(ctx, cur, metav1.UpdateOptions{FieldManager: "rampart-lab"})
			hasStatus = false
		case err == nil:
			u.SetResourceVersion(cur.GetResourceVersion())
			cur, err = r.Update(ctx, u, metav1.UpdateOptions{FieldManager: "rampart-lab"})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", o.Kind, o.Ref(), err))
			continue
		}
		note(cur)
		// Status is the kubelet's (pods), the node's (nodes) and a load-balancer controller's
		// (Services) to report: write it as they would, when the manifest or the lab's
		// placement gives one (a pod without an address is placed by follow instead).
		st, _ := status.(map[string]any)
		lb, _ := st["loadBalancer"].(map[string]any)
		if hasStatus && (o.Kind == model.KindPod && st["podIP"] != nil || o.Kind == model.KindNode && st["addresses"] != nil ||
			o.Kind == model.KindService && lb["ingress"] != nil) {
			for attempt := 0; ; attempt++ {
				cur.Object["status"] = st
				var got *unstructured.Unstructured
				got, err = r.UpdateStatus(ctx, cur, metav1.UpdateOptions{FieldManager: "rampart-lab"})
				if err == nil {
					cur = got
					break
				}
				if !apierrors.IsConflict(err) || attempt == 4 {
					break
				}
				if cur, err = r.Get(ctx, u.GetName(), metav1.GetOptions{}); err != nil {
					break
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s status: %w", o.Kind, o.Ref(), err))
				continue
			}
			note(cur)
		}
	}
	return maxRV, perKind, errors.Join(errs...)
}

// policyRefs lists every policy the API server holds, sorted by kind then reference: what
// `lab delete --all-policies` deletes. The API server's list, not the daemon's snapshot, which
// may not have seen a change a client has just made.
func (k *kubeMode) policyRefs(ctx context.Context) ([][2]string, error) {
	var refs [][2]string
	for _, kind := range []string{model.KindNetworkPolicy, model.KindANP, model.KindBANP, model.KindCNP} {
		list, err := k.resource(kind, "").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		var names []string
		for _, o := range list.Items {
			if ns := o.GetNamespace(); ns != "" {
				names = append(names, ns+"/"+o.GetName())
			} else {
				names = append(names, o.GetName())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			refs = append(refs, [2]string{kind, n})
		}
	}
	return refs, nil
}

// deleteObjects deletes through the API server. Without a namespace controller, a namespace's
// contents are deleted and the namespace finalized here.
func (k *kubeMode) deleteObjects(ctx context.Context, targets [][2]string) error {
	var errs []error
	for _, t := range targets {
		kind, ok := model.IsKind(t[0])
		if !ok {
			errs = append(errs, fmt.Errorf("unsupported kind %q", t[0]))
			continue
		}
		ns, name, err := splitRef(kind, t[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = k.resource(kind, ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if apierrors.IsNotFound(err) {
			err = fmt.Errorf("%s %s: %w", kind, t[1], model.ErrNotFound)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if kind == model.KindNamespace {
			errs = append(errs, k.finalizeNamespace(ctx, name))
		}
	}
	return errors.Join(errs...)
}

// splitRef splits a reference to an object of kind: namespace/name, or a bare name for kinds
// outside namespaces.
func splitRef(kind, ref string) (string, string, error) {
	if model.Namespaced(kind) {
		return splitKey(ref)
	}
	return "", ref, nil
}

// label patches labels (nil removes).
func (k *kubeMode) label(ctx context.Context, kind, ref string, set map[string]string, remove []string) (uint64, error) {
	labels := map[string]any{}
	for key, v := range set {
		labels[key] = v
	}
	for _, key := range remove {
		labels[key] = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	ns, name, err := splitRef(kind, ref)
	if err != nil {
		return 0, err
	}
	u, err := k.resource(kind, ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "rampart-lab"})
	if err != nil {
		return 0, fmt.Errorf("label %s %s: %w", kind, ref, err)
	}
	rv, _ := strconv.ParseUint(u.GetResourceVersion(), 10, 64)
	return rv, nil
}

// enforced waits until the change the API server acknowledged at rv, and whatever cond waits
// for in the lab's view, is built into the lab and in force on every node.
func (l *Lab) enforced(ctx context.Context, rv uint64, cond func(c *model.Cluster) bool) error {
	k := l.kube
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		seen, kinds := k.src.ResourceVersion(), k.src.ResourceVersions()
		api, _ := k.src.Snapshot()
		k.mu.Lock()
		realised := k.realised
		k.mu.Unlock()
		if seen >= rv && (cond == nil || cond(api)) && realised >= seen && k.agentsAt(ctx, seen, kinds) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the change is not in force on every node after 30s (agents: %s)", k.agentSummary(ctx))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// agentsAt reports whether every agent enforces the state at resourceVersion rv or later,
// kind by kind as far as the lab's own view has seen each kind.
func (k *kubeMode) agentsAt(ctx context.Context, rv uint64, kinds map[string]uint64) bool {
	for _, p := range k.procs() {
		st, err := p.client.Status(ctx)
		if err != nil || st.ResourceVersion < rv || st.LastError != "" {
			return false
		}
		for kind, krv := range kinds {
			if st.ResourceVersions[kind] < krv {
				return false
			}
		}
	}
	return true
}

func (k *kubeMode) agentSummary(ctx context.Context) string {
	var parts []string
	for _, p := range k.procs() {
		st, err := p.client.Status(ctx)
		if err != nil {
			parts = append(parts, p.node+": "+err.Error())
		} else {
			parts = append(parts, fmt.Sprintf("%s: resourceVersion %d %s", p.node, st.ResourceVersion, st.LastError))
		}
	}
	return strings.Join(parts, "; ")
}

// procs returns the agent processes, by node name.
func (k *kubeMode) procs() []*agentProc {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*agentProc, 0, len(k.agents))
	for _, n := range model.SortedKeys(k.agents) {
		out = append(out, k.agents[n])
	}
	return out
}

// startAgent runs and supervises the agent of a node: like kubelet for a DaemonSet pod, it
// restarts the agent when it exits, after a short pause.
func (k *kubeMode) startAgent(l *Lab, node string) {
	dir := Dir(l.settings.Name)
	p := &agentProc{node: node, sock: filepath.Join(dir, "agent-"+node+".sock"), log: filepath.Join(dir, "agent-"+node+".log")}
	p.client = agent.NewClient("unix:" + p.sock)
	k.mu.Lock()
	k.agents[node] = p
	k.mu.Unlock()
	args := []string{"agent", "--kubeconfig", k.srv.Kubeconfig, "--node-name", node, "--dataplane", l.settings.Dataplane,
		"--netns", l.fabric.NodeNetns(node), "--health-addr", "unix:" + p.sock, "--metrics-addr", "unix:" + p.sock,
		"--log-format", "json", "--disconnect-grace", "10s", "--pod-interface-prefix", PodInterfacePrefix,
		"--threat-config", threatFile(l.settings.Name)}
	args = append(args, "--uplink", "eth0") // the node's link to the fabric bridge, and the outside
	if k.pins != "" {
		args = append(args, "--pin-dir", k.pins)
	}
	if l.settings.NoFlows {
		args = append(args, "--flows=false")
	}
	if n := l.settings.FlowMaxConnections; n > 0 {
		args = append(args, "--flow-max-connections", strconv.Itoa(n))
	}
	// The lab's connect-time balancer is this process's: the agent reads its flow notes through
	// an inherited descriptor (fd 3), so its records name the Services it balanced.
	var notes *os.File
	if s := l.sockRef.Load(); s != nil {
		if m := s.FlowNotes(); m != nil {
			if fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 3); err == nil {
				notes = os.NewFile(uintptr(fd), "lb_flows")
				args = append(args, "--lb-flows-fd", "3")
			} else {
				k.log.Warn("agent flow records will not name connect-time Services", "node", node, "err", err)
			}
		}
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		if notes != nil {
			defer notes.Close()
		}
		for {
			logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				k.log.Error("agent log", "node", node, "err", err)
				return
			}
			cmd := exec.Command(k.exe, args...)
			cmd.Stdout, cmd.Stderr = logf, logf
			if notes != nil {
				cmd.ExtraFiles = []*os.File{notes}
			}
			err = cmd.Start()
			if err == nil {
				p.mu.Lock()
				p.cmd = cmd
				p.mu.Unlock()
				k.recordPID(l.settings.Name, cmd.Process.Pid)
				err = cmd.Wait()
			}
			logf.Close()
			k.mu.Lock()
			stopping := k.stopping
			k.mu.Unlock()
			if stopping {
				return
			}
			p.mu.Lock()
			p.restarts++
			p.mu.Unlock()
			k.log.Warn("node agent exited; restarting", "node", node, "err", err)
			select {
			case <-l.agentCtx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

// waitReady waits for every agent's /readyz.
func (k *kubeMode) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, p := range k.procs() {
		for {
			st, err := p.client.Status(ctx)
			if err == nil && st.Ready {
				break
			}
			select {
			case <-ctx.Done():
				b, _ := os.ReadFile(p.log)
				return fmt.Errorf("agent of node %s not ready in 2 minutes: %v\n%s", p.node, err, tail(string(b)))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

// recordPID notes a process the lab started, so that `lab down` can end it after a crash.
func (k *kubeMode) recordPID(lab string, pid int) {
	f, err := os.OpenFile(pidFile(lab), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	fmt.Fprintln(f, pid)
	f.Close()
}

// stop ends the agents (enforcement stays until the namespaces go), the API server and the
// pins' mount.
func (k *kubeMode) stop() error {
	k.mu.Lock()
	k.stopping = true
	k.mu.Unlock()
	for _, p := range k.procs() {
		p.mu.Lock()
		if p.cmd != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
		p.mu.Unlock()
	}
	k.wg.Wait()
	k.mu.Lock()
	srv := k.srv
	k.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
	if k.pins != "" {
		return unmount(k.pins)
	}
	return nil
}

func unmount(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// CleanupProcesses ends the processes a crashed --kube lab daemon left (the API server and
// agents), by the PIDs it recorded, checking that each still runs for this lab, and unmounts
// the agents' bpffs.
func CleanupProcesses(name string) error {
	dir := Dir(name)
	b, err := os.ReadFile(pidFile(name))
	if err == nil {
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 1 {
				continue
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || !strings.Contains(string(cmdline), dir+"/") {
				continue // gone, or a reused PID that is not ours
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return unmount(filepath.Join(dir, "bpf"))
}

// Settle waits until everything the lab's view of the API server holds is built into the lab
// and in force on every node (after changes made by other clients).
func (l *Lab) Settle(ctx context.Context) error { return l.enforced(ctx, 0, nil) }

// StopAPIServer stops a --kube lab's API server (fault injection: agents keep enforcing the
// last state they had).
func (l *Lab) StopAPIServer() {
	l.kube.mu.Lock()
	srv := l.kube.srv
	l.kube.mu.Unlock()
	srv.Stop()
}

// StartAPIServer starts a --kube lab's API server; started again after StopAPIServer, it has
// the same address, certificates and etcd data, so every client reconnects and resumes its
// watches.
func (l *Lab) StartAPIServer(ctx context.Context) error {
	srv, err := apiserver.Start(ctx, apiserverDir(l.settings.Name), apiserver.Options{})
	if err != nil {
		return err
	}
	l.kube.recordPID(l.settings.Name, srv.PID())
	l.kube.mu.Lock()
	l.kube.srv = srv
	l.kube.mu.Unlock()
	return nil
}

// AgentStates returns each node's agent state, for `lab get nodes`.
func (l *Lab) AgentStates(ctx context.Context) map[string]AgentView {
	out := map[string]AgentView{}
	if l.kube != nil {
		for _, p := range l.kube.procs() {
			p.mu.Lock()
			v := AgentView{Restarts: p.restarts}
			if p.cmd != nil && p.cmd.Process != nil {
				v.PID = p.cmd.Process.Pid
			}
			p.mu.Unlock()
			if st, err := p.client.Status(ctx); err == nil {
				v.fill(st)
			} else {
				v.Reason = "not answering: " + err.Error()
			}
			out[p.node] = v
		}
		return out
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, na := range l.agents {
		var v AgentView
		v.fill(na.Status())
		v.PID = os.Getpid()
		out[n] = v
	}
	return out
}

// AgentView is a node agent's state as `lab get nodes` shows it.
type AgentView struct {
	Ready     bool      `json:"ready"`
	Reason    string    `json:"reason,omitempty"`
	LastSync  time.Time `json:"lastSync,omitzero"`
	Restarts  int       `json:"restarts"`
	PID       int       `json:"pid,omitempty"`
	LastError string    `json:"lastError,omitempty"`
}

func (v *AgentView) fill(st agent.Status) {
	v.Ready, v.Reason, v.LastSync, v.LastError = st.Ready, st.Reason, st.LastSync, st.LastError
}

// kubeApply writes objects through the API server and waits until they are in force.
func (l *Lab) kubeApply(ctx context.Context, objs []model.Object) error {
	rv, perKind, err := l.kube.write(ctx, objs)
	if err != nil {
		return err
	}
	return l.enforced(ctx, rv, func(c *model.Cluster) bool {
		seen := l.kube.src.ResourceVersions() // each kind's watch has delivered its writes
		for kind, krv := range perKind {
			if seen[kind] < krv {
				return false
			}
		}
		for _, o := range objs {
			if o.Kind == model.KindPod {
				if p, ok := c.Pods[o.Ref()]; !ok || p.Status.PodIP == "" {
					return false
				}
			}
		}
		return true
	})
}

// kubeDelete deletes through the API server and waits until the objects are gone everywhere.
func (l *Lab) kubeDelete(ctx context.Context, targets [][2]string) error {
	if err := l.kube.deleteObjects(ctx, targets); err != nil {
		return err
	}
	return l.enforced(ctx, 0, func(c *model.Cluster) bool {
		for _, t := range targets {
			if c.Has(t[0], t[1]) {
				return false
			}
		}
		return true
	})
}
