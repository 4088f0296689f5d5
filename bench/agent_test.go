package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rampart-sec/rampart/internal/agent"
	"github.com/rampart-sec/rampart/internal/lab/apiserver"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

// agentResult is one (dataplane, scale) run of TestBenchAgent.
type agentResult struct {
	Dataplane string `json:"dataplane"`
	Pods      int    `json:"pods"`
	Nodes     int    `json:"nodes"`
	Policies  int    `json:"policies"`
	LocalPods int    `json:"local_pods"`
	Changes   int    `json:"changes"`
	// API write: the Update call's own latency; enforced: from the call to the agent reporting
	// the write's resourceVersion programmed (its Sync returned: the kernel holds it).
	APIWriteP50ms float64 `json:"api_write_p50_ms"`
	APIWriteP99ms float64 `json:"api_write_p99_ms"`
	EnforcedP50ms float64 `json:"enforced_p50_ms"`
	EnforcedP99ms float64 `json:"enforced_p99_ms"`
	// Ratio of the enforced p50 to the API write p50 of the same run.
	Ratio  float64 `json:"enforced_to_api_write_p50"`
	RSSMiB float64 `json:"agent_rss_mib"`
	// Of the RSS: anonymous memory (heap, stacks) and mapped file pages (the binary's code and
	// data; shared, clean, reclaimable by the kernel).
	RSSAnonMiB  float64 `json:"agent_rss_anon_mib"`
	RSSFileMiB  float64 `json:"agent_rss_file_mib"`
	InterfaceMs float64 `json:"pod_interface_to_enforced_ms"`
	InitialMs   float64 `json:"initial_sync_ms"`
}

// TestBenchAgent measures the agent as users run it: a real kube-apiserver holding the cluster as
// API objects, one rampart-agent process (the DaemonSet's) enforcing one node (a network namespace with routed
// veths for its local pods), and single-policy changes written through the API server, timed
// until the agent reports them programmed. Beside each change's latency it records the API
// server's own write latency in the same run, the agent's resident memory, and the time from a
// new local pod's interface appearing to its rules being in place. Results go to
// bench/results/agent.json. Run by `make bench`.
func TestBenchAgent(t *testing.T) {
	if os.Getenv("RAMPART_BENCH") == "" {
		t.Skip("set RAMPART_BENCH=1 (make bench) to run the agent benchmark")
	}
	netnstest.RequireRoot(t, "iptables-restore", "ipset")
	// The DaemonSet's binary: `rampart agent` alone.
	bin := filepath.Join(t.TempDir(), "rampart-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/rampart-agent").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var results []agentResult
	type scale struct{ pods, policies, nodes, changes int }
	// 150 changes: the p99 is then more than the slowest change.
	scales := []scale{{1000, 100, otherNodes, 150}, {10000, 1000, otherNodes, 150}}
	if os.Getenv("RAMPART_BENCH_ENVELOPE") != "" {
		// The edge of Kubernetes' scalability envelope: 150,000 pods on 5,000 nodes, and
		// 10,000 policies, as API objects; one real node enforcing.
		scales = append(scales, scale{150000, 10000, 4999, 20})
	}
	for _, sc := range scales {
		for _, dp := range []string{"iptables", "ebpf"} {
			r := benchAgent(t, bin, dp, sc.pods, sc.policies, sc.nodes, sc.changes)
			t.Logf("%+v", r)
			results = append(results, r)
		}
	}
	b, _ := json.MarshalIndent(results, "", "  ")
	t.Logf("\n%s", b)
	if err := os.WriteFile("results/agent.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

const benchLocal = 20 // local pods of the enforcing node

func benchAgent(t *testing.T, bin, dp string, pods, policies, nodes, changes int) agentResult {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	r := agentResult{Dataplane: dp, Pods: pods, Policies: policies, Nodes: nodes + 1, LocalPods: benchLocal, Changes: changes}
	dir := t.TempDir()
	srv, err := apiserver.Start(ctx, filepath.Join(dir, "apiserver"), apiserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", srv.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 5000, 5000
	cfg.WarningHandler = rest.NoWarnings{}
	cs := kubernetes.NewForConfigOrDie(cfg)
	c := clusterOn(pods, policies, benchLocal, nodes)
	createCluster(t, ctx, cs, c, nodes)

	// The node: routed veths for its local pods, as the ptp CNI plugin makes them.
	ns := netnstest.New(t, "rb-agent")
	for i := 0; i < benchLocal; i++ {
		addPodVeth(t, ns, i, c.Pods[fmt.Sprintf("ns-%d/pod-%d", i%scaleNamespaces, i)].Status.PodIP)
	}
	sock := filepath.Join(dir, "agent.sock")
	args := []string{"--kubeconfig", srv.Kubeconfig, "--node-name", "node-0", "--dataplane", dp, "--netns", ns,
		"--health-addr", "unix:" + sock, "--metrics-addr", "unix:" + sock, "--log-format", "json"}
	profDir := os.Getenv("RAMPART_BENCH_PROFILE") // where the agent's CPU and heap profiles go
	if profDir != "" {
		args = append(args, "--pprof")
	}
	if dp == "ebpf" {
		pins := filepath.Join(dir, "bpf")
		if err := os.Mkdir(pins, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("bpf", pins, "bpf", 0, "mode=0700"); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(pins, unix.MNT_DETACH)
		args = append(args, "--pin-dir", pins)
	}
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	status := agent.NewClient("unix:" + sock).Status
	for {
		st, err := status(ctx)
		if err == nil && st.Ready {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("agent not ready: %v %+v\n%s", err, st, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.InitialMs = ms(time.Since(start))

	// Single-policy changes through the API server.
	var writes, enforced []time.Duration
	name := fmt.Sprintf("%s-%d-", dp, pods)
	cpuDone := make(chan struct{})
	if profDir != "" {
		go func() {
			defer close(cpuDone)
			saveProfile(t, sock, "/debug/pprof/profile?seconds=10", filepath.Join(profDir, name+"cpu.pprof"))
		}()
	} else {
		close(cpuDone)
	}
	for i := 0; i < r.Changes; i++ {
		np := scalePolicy(i%policies, int32(9100+i))
		cur, err := cs.NetworkingV1().NetworkPolicies(np.Namespace).Get(ctx, np.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		np.ResourceVersion = cur.ResourceVersion
		t0 := time.Now()
		out, err := cs.NetworkingV1().NetworkPolicies(np.Namespace).Update(ctx, np, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		writes = append(writes, time.Since(t0))
		rv, _ := strconv.ParseUint(out.ResourceVersion, 10, 64)
		for {
			st, err := status(ctx)
			if err == nil && st.ResourceVersion >= rv && st.LastError == "" {
				break
			}
			if time.Since(t0) > time.Minute {
				t.Fatalf("change %d not enforced after a minute: %+v %v", i, st, err)
			}
			time.Sleep(500 * time.Microsecond)
		}
		enforced = append(enforced, time.Since(t0))
	}
	r.APIWriteP50ms, r.APIWriteP99ms = percentiles(writes)
	r.EnforcedP50ms, r.EnforcedP99ms = percentiles(enforced)
	r.Ratio = r.EnforcedP50ms / r.APIWriteP50ms
	r.RSSMiB, r.RSSAnonMiB, r.RSSFileMiB = rssMiB(t, cmd.Process.Pid)
	if profDir != "" {
		<-cpuDone
		saveProfile(t, sock, "/metrics", filepath.Join(profDir, name+"metrics.txt")) // the Go runtime's memory
		saveProfile(t, sock, "/debug/pprof/heap?gc=1", filepath.Join(profDir, name+"heap.pprof"))
	}

	// A new local pod: its object first (as the kubelet reports the address before the CNI
	// plugin's veth exists to the agent), then its interface; timed until it is enforced.
	p := c.Pods["ns-1/pod-1"].DeepCopy()
	p.Name, p.ResourceVersion = "late-pod", ""
	ip := "10.250.0.1"
	p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	createPod(t, ctx, cs, p.Core())
	waitSeen := time.Now()
	for {
		st, _ := status(ctx)
		if st.LocalPods == benchLocal+1 { // the pod object is in, its interface not yet
			if cur, _ := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{}); cur != nil {
				if rv, _ := strconv.ParseUint(cur.ResourceVersion, 10, 64); st.ResourceVersion >= rv {
					break
				}
			}
		}
		if time.Since(waitSeen) > time.Minute {
			t.Fatal("the late pod's object never reached the agent")
		}
		time.Sleep(time.Millisecond)
	}
	iface := addPodVeth(t, ns, benchLocal, ip)
	t0 := time.Now()
	for !programmed(ns, dp, iface) {
		if time.Since(t0) > time.Minute {
			t.Fatal("the late pod's interface was never programmed")
		}
		time.Sleep(time.Millisecond)
	}
	r.InterfaceMs = ms(time.Since(t0))
	return r
}

// createCluster writes the cluster's objects through the API server, 16 writers at once.
func createCluster(t *testing.T, ctx context.Context, cs kubernetes.Interface, c *model.Cluster, others int) {
	t.Helper()
	for _, k := range model.SortedKeys(c.Namespaces) {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, c.Namespaces[k], metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	work := make(chan func() error)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := f(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for n := 0; n <= others; n++ {
		node := &corev1.Node{}
		node.Name = fmt.Sprintf("node-%d", n)
		work <- func() error {
			_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
			return err
		}
	}
	for _, k := range model.SortedKeys(c.Pods) {
		p := c.Pods[k]
		work <- func() error { return createPodErr(ctx, cs, p.Core()) }
	}
	for _, k := range model.SortedKeys(c.NetworkPolicies) {
		np := c.NetworkPolicies[k]
		work <- func() error {
			_, err := cs.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
			return err
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

func createPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) {
	t.Helper()
	if err := createPodErr(ctx, cs, p); err != nil {
		t.Fatal(err)
	}
}

// createPodErr creates a pod and writes its status (the address a kubelet would report).
func createPodErr(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) error {
	p = p.DeepCopy()
	for i := range p.Spec.Containers {
		p.Spec.Containers[i].Image = "localhost/app:1"
	}
	status := p.Status
	out, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	out.Status = status
	_, err = cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{})
	return err
}

// addPodVeth makes a local pod's host side: a veth (its peer stands for the pod's end) and the
// /32 route to the pod through it. It returns the host-side name.
func addPodVeth(t *testing.T, ns string, i int, ip string) string {
	t.Helper()
	host, peer := fmt.Sprintf("vb%d", i), fmt.Sprintf("vp%d", i)
	netnstest.Run(t, ns, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	netnstest.Run(t, ns, "ip", "link", "set", host, "up")
	netnstest.Run(t, ns, "ip", "link", "set", peer, "up")
	netnstest.Run(t, ns, "ip", "route", "add", ip+"/32", "dev", host)
	return host
}

// programmed reports whether the dataplane has rules (iptables) or programs (eBPF, TCX) on iface.
func programmed(ns, dp, iface string) bool {
	if dp == "iptables" {
		out, err := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "iptables-save", "-t", "filter").Output()
		return err == nil && strings.Contains(string(out), iface)
	}
	return netnstest.TCXAttached(ns, iface)
}

// rssMiB reads a process's resident memory: in all, anonymous, and mapped file pages.
func rssMiB(t *testing.T, pid int) (all, anon, file float64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			all = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:":
			file = kb / 1024
		}
	}
	return all, anon, file
}

// saveProfile fetches one of the agent's pprof profiles (it runs with --pprof) into a file.
func saveProfile(t *testing.T, sock, path, file string) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://agent" + path)
	if err != nil {
		t.Errorf("profile %s: %v", path, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		t.Errorf("profile %s: %v", path, err)
	}
}
