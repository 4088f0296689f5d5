package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/fabric"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

// TestLabKube runs --kube labs (a real API server, one `rampart agent` process per node) on
// both dataplanes: policies created through the API server with client-go are enforced and
// agree with the evaluator, random policy sequences through the API agree too, and SIGKILLing
// every agent keeps the verdicts and an open connection while the lab restarts them.
func TestLabKube(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver and agent processes")
	}
	bin := rampartBinary(t)
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) { labKube(t, dp, bin) })
	}
}

func labKube(t *testing.T, dp, bin string) {
	// A Service in front of y/b: probes "via service" address it, and flow records name it.
	const svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: y}\nspec: {selector: {pod: b}, ports: [{port: 80}]}\n"
	l := labtest.NewKube(t, 2, dp, randpolicy.Cluster()+svc, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg, err := clientcmd.BuildConfigFromFlags("", controller.Kubeconfig(l.Settings().Name))
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)

	// agree checks every probe against the evaluator of the lab's current state.
	agree := func(what string) {
		t.Helper()
		// Changes made with client-go reach the nodes on their own: wait until they have.
		if err := l.Settle(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_, rs := l.Snapshot()
		want := map[string]bool{}
		for _, cell := range policy.New(rs).Matrix(nil) {
			want[fmt.Sprintf("%s>%s:%d/%s", cell.From, cell.To, cell.Port, cell.Protocol)] = cell.Allowed
		}
		probes, err := l.Probe(ctx, controller.ProbeRequest{Via: "service", Timeout: 700 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var wrong []string
		for _, p := range probes {
			k := fmt.Sprintf("%s>%s:%d/%s", p.From, p.To, p.Port, p.Protocol)
			if want[k] != p.Connected {
				wrong = append(wrong, fmt.Sprintf("%s: kernel connected=%v, evaluator allowed=%v", k, p.Connected, want[k]))
			}
		}
		if len(wrong) > 0 {
			t.Fatalf("%s: %d of %d probes disagree with the evaluator:\n%s", what, len(wrong), len(probes), strings.Join(wrong[:min(10, len(wrong))], "\n"))
		}
	}
	// denied reports whether x/a cannot reach y/b on 80/TCP.
	denied := func() bool {
		ps, err := l.Probe(ctx, controller.ProbeRequest{From: "x/a", To: "y/b", Port: 80, Protocol: "TCP", Via: "pod", Timeout: 300 * time.Millisecond})
		if err != nil || len(ps) != 1 {
			t.Fatalf("probe: %v %+v", err, ps)
		}
		return !ps[0].Connected
	}
	agree("no policy")
	// The agent processes' records name the Services the probes addressed (on eBPF through the
	// notes of the lab's connect-time balancer, which the agents inherit as a descriptor).
	servicesNamed := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			w := httptest.NewRecorder()
			l.Handler(func() {}).ServeHTTP(w, httptest.NewRequest("GET", "/flows?verdict=allowed&pod=y/b", nil))
			named := 0
			for _, line := range strings.Split(strings.TrimSpace(w.Body.String()), "\n") {
				var r flow.Record
				if json.Unmarshal([]byte(line), &r) == nil && r.Destination.Pod == "b" && r.Destination.Namespace == "y" {
					if s := r.Destination.Service; s != nil && s.Namespace == "y" && s.Name != "" && s.IP != r.Destination.IP {
						named++
					}
				}
			}
			if named > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no allowed record to y/b names its Service: %d %s", what, w.Code, w.Body)
			}
		}
	}
	servicesNamed("no policy")

	// An open connection z/a -> y/b that policy keeps allowing throughout.
	_, rs := l.Snapshot()
	dst := netip.AddrPortFrom(rs.PodByKey("y/b").IP(), 80)
	conn, err := l.Fabric.DialTCP(ctx, "z", "a", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip := labtest.Echo(t, conn)

	// A policy created with client-go, as kubectl would: y/b accepts only namespace z.
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "y", Name: "b-from-z"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "z"}}}}}},
		},
	}
	start := time.Now()
	if _, err := cs.NetworkingV1().NetworkPolicies("y").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for !denied() {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the NetworkPolicy created through the API server is not enforced after 10s")
		}
	}
	t.Logf("created through the API server -> enforced in the kernel in %v", time.Since(start).Round(time.Millisecond))
	// The agent processes' flow records (GET /v1/flows, merged by the lab) name the policy.
	for deadline := time.Now().Add(5 * time.Second); ; {
		w := httptest.NewRecorder()
		l.Handler(func() {}).ServeHTTP(w, httptest.NewRequest("GET", "/flows?verdict=denied&pod=y/b&policy=b-from-z", nil))
		if w.Code == 200 && strings.Contains(w.Body.String(), `"name":"b-from-z"`) && strings.Contains(w.Body.String(), `"pod":"a"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no denied flow record naming b-from-z from the agents: %d %s", w.Code, w.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The lab's view follows the API server too (its evaluator must see the policy).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, _ := l.Snapshot(); c.NetworkPolicies["y/b-from-z"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lab's view lacks the policy")
		}
	}
	agree("a NetworkPolicy created through the API server")
	if err := roundTrip("after-create"); err != nil {
		t.Fatalf("the allowed connection broke: %v", err)
	}

	// SIGKILL every agent: enforcement stays, the connection survives, the lab restarts them.
	pids := map[string]int{}
	for node, a := range l.AgentStates(ctx) {
		pids[node] = a.PID
		if err := syscall.Kill(a.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	killed := time.Now()
	for range 3 {
		if !denied() {
			t.Fatal("a denied probe got through while the agents were down")
		}
	}
	if err := roundTrip("agents-killed"); err != nil {
		t.Fatalf("the open connection broke when the agents were killed: %v", err)
	}
	for restarted := false; !restarted; time.Sleep(20 * time.Millisecond) {
		restarted = true
		for node, a := range l.AgentStates(ctx) {
			if a.PID == pids[node] || a.PID == 0 || !a.Ready {
				restarted = false
			}
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("agents not back and ready 30s after SIGKILL: %+v", l.AgentStates(ctx))
		}
	}
	t.Logf("agents restarted and ready %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	for node, a := range l.AgentStates(ctx) {
		if a.Restarts != 1 {
			t.Errorf("node %s: %d restarts, want 1", node, a.Restarts)
		}
	}
	if err := roundTrip("agents-back"); err != nil {
		t.Fatalf("the open connection broke after the agents came back: %v", err)
	}
	agree("after the agents' restart")
	servicesNamed("after the agents' restart")

	// The API server goes away: enforcement stays as it is. Once it is back, a change made
	// right away is enforced (the agents' watches resume or relist).
	l.StopAPIServer()
	for range 2 {
		if !denied() {
			t.Fatal("a denied probe got through while the API server was down")
		}
	}
	if err := roundTrip("apiserver-down"); err != nil {
		t.Fatalf("the open connection broke while the API server was down: %v", err)
	}
	if err := l.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	cs = kubernetes.NewForConfigOrDie(cfg)
	other := np.DeepCopy()
	other.Name, other.ResourceVersion = "c-from-z", ""
	other.Spec.PodSelector.MatchLabels = map[string]string{"pod": "c"}
	var createErr error
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(100 * time.Millisecond) {
		if _, createErr = cs.NetworkingV1().NetworkPolicies("y").Create(ctx, other, metav1.CreateOptions{}); createErr == nil {
			break
		}
	}
	if createErr != nil {
		t.Fatal(createErr)
	}
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		ps, err := l.Probe(ctx, controller.ProbeRequest{From: "x/a", To: "y/c", Port: 80, Protocol: "TCP", Via: "pod", Timeout: 300 * time.Millisecond})
		if err != nil || len(ps) != 1 {
			t.Fatalf("probe: %v %+v", err, ps)
		}
		if !ps[0].Connected {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("a policy created right after the API server came back is not enforced after 30s")
		}
	}
	if err := cs.NetworkingV1().NetworkPolicies("y").Delete(ctx, "c-from-z", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Deleting the policy through the API server restores reachability.
	if err := cs.NetworkingV1().NetworkPolicies("y").Delete(ctx, "b-from-z", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); denied(); {
		if time.Since(start) > 10*time.Second {
			t.Fatal("still denied 10s after the policy was deleted")
		}
	}

	// Random policy sets, applied through the API server (the lab's apply writes there and
	// waits until every agent enforces what it wrote), agree with the evaluator.
	for seed := int64(1); seed <= 3; seed++ {
		y := randpolicy.Generate(rand.New(rand.NewSource(seed)), randpolicy.Options{NetworkPolicies: 3, AdminPolicies: 2, Baseline: true, ClusterPolicies: 3})
		if err := l.Delete(ctx, controller.DeleteRequest{AllPolicies: true}); err != nil && !strings.Contains(err.Error(), "nothing to delete") {
			t.Fatal(err)
		}
		if err := l.Apply(ctx, y); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, y)
		}
		agree(fmt.Sprintf("random policy set %d", seed))
	}
	// Labels changed through the API server move pods in and out of policy.
	if err := l.Label(ctx, controller.LabelRequest{Kind: "namespace", Name: "z", Set: map[string]string{"ns": "q"}}); err != nil {
		t.Fatal(err)
	}
	agree("after relabelling namespace z")

	// Namespaces and pods created and deleted through the API server, as kubectl does it (a pod
	// with neither node nor address, deletions with the default grace period): the lab schedules
	// and builds the pod, and finishes the deletions as kubelet and the namespace controller do.
	wns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "w", Labels: map[string]string{"ns": "w"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, wns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "w", Name: "d", Labels: map[string]string{"pod": "d"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "agnhost", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}}}}
	if _, err := cs.CoreV1().Pods("w").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for start := time.Now(); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Since(start) > 30*time.Second {
				t.Fatalf("%s: not after 30s", what)
			}
		}
	}
	eventually("the API-created pod answers", func() bool {
		ps, err := l.Probe(ctx, controller.ProbeRequest{From: "x/a", To: "w/d", Port: 80, Protocol: "TCP", Via: "pod", Timeout: 300 * time.Millisecond})
		return err == nil && len(ps) == 1 && ps[0].Connected
	})
	if p, err := cs.CoreV1().Pods("w").Get(ctx, "d", metav1.GetOptions{}); err != nil || p.Spec.NodeName == "" || p.Status.PodIP == "" {
		t.Fatalf("the API-created pod was not bound and given an address: %v %+v", err, p)
	}
	agree("with a pod created through the API server")
	if err := cs.CoreV1().Pods("w").Delete(ctx, "d", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the deleted pod is gone", func() bool {
		_, err := cs.CoreV1().Pods("w").Get(ctx, "d", metav1.GetOptions{})
		c, _ := l.Snapshot()
		return apierrors.IsNotFound(err) && c.Pods["w/d"] == nil
	})
	if _, err := cs.CoreV1().Pods("w").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, "w", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the deleted namespace and its pod are gone", func() bool {
		_, err := cs.CoreV1().Namespaces().Get(ctx, "w", metav1.GetOptions{})
		c, _ := l.Snapshot()
		return apierrors.IsNotFound(err) && c.Pods["w/d"] == nil && c.Namespaces["w"] == nil
	})
	agree("after the namespace's deletion")
}

// TestLabKubeCrashCleanup brings a --kube lab up through the CLI, SIGKILLs its daemon (the
// API server and agents stay behind, as after a crash), and checks that `lab down` ends every
// process of that lab, by PID, and removes its namespaces, mount and state, while a second lab
// whose name it prefixes is left alone.
func TestLabKubeCrashCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver and agent processes")
	}
	netnstest.RequireRoot(t, "ip", "iptables-restore", "ipset")
	controller.StateRoot = defaultStateRoot // the CLI's (labtest points it elsewhere)
	bin := rampartBinary(t)
	name := fmt.Sprintf("k%d", rand.Intn(100000))
	other := name + "-b" // its prefix is name's: must survive name's clean-up
	run := func(lab string, args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--name", lab)...).CombinedOutput()
		return string(out), err
	}
	for _, lab := range []string{name, other} {
		t.Cleanup(func() { _, _ = run(lab, "lab", "down") })
	}
	base := "../../test/conformance/cases/netpol/base.yaml"
	if out, err := run(name, "lab", "up", "--kube", "--dataplane", "ebpf", "-f", base); err != nil {
		t.Fatalf("lab up --kube: %v\n%s", err, out)
	}
	if out, err := run(other, "lab", "up", "-f", base); err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	kc, err := run(name, "lab", "kubeconfig")
	if err != nil || !strings.HasSuffix(strings.TrimSpace(kc), "/kubeconfig") {
		t.Fatalf("lab kubeconfig: %v %q", err, kc)
	}
	out, err := run(name, "lab", "get", "nodes")
	if err != nil || !strings.Contains(out, "ready") {
		t.Fatalf("lab get nodes: %v\n%s", err, out)
	}
	dir := controller.Dir(name)
	pid, ok := daemonPID(name)
	if !ok {
		t.Fatal("no daemon PID recorded")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, ok := daemonPID(name); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon survived SIGKILL")
		}
	}
	if len(labProcesses(dir)) == 0 {
		t.Fatal("no API server or agent left after the daemon's crash: the test proves nothing")
	}
	if out, err := run(name, "lab", "down"); err != nil {
		t.Fatalf("lab down after a crash: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(10 * time.Second); len(labProcesses(dir)) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("processes of the lab left after lab down: %v", labProcesses(dir))
		}
	}
	nsList, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(nsList), fabric.Prefix(name)) {
		t.Errorf("namespaces left:\n%s", nsList)
	}
	if !strings.Contains(string(nsList), fabric.Prefix(other)) {
		t.Errorf("lab %s's namespaces went with lab %s's clean-up:\n%s", other, name, nsList)
	}
	if mounts, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left:\n%s", mounts)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state left in %s", dir)
	}
	if out, err := run(other, "lab", "probe", "--from", "x/a", "--to", "x/b", "--port", "80", "--protocol", "TCP"); err != nil || !strings.Contains(out, "connected") {
		t.Errorf("lab %s stopped working after lab %s went down: %v\n%s", other, name, err, out)
	}
}

// defaultStateRoot is where the CLI keeps labs, captured before any test changes it.
var defaultStateRoot = controller.StateRoot

// labProcesses lists the PIDs whose command line names the lab's state directory.
func labProcesses(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(b), dir+"/") {
			out = append(out, pid)
		}
	}
	return out
}
