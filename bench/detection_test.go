package bench

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/threat"
)

// detectionTrials is how many times each attack runs, each time from another client toward
// another server, so no detector's memory or quiet period of one trial touches the next.
const detectionTrials = 5

// detectionResult is one detector's latencies on one dataplane, in bench/results/detection.json.
type detectionResult struct {
	Dataplane string    `json:"dataplane"`
	Detector  string    `json:"detector"`
	Attack    string    `json:"attack"`
	Seconds   []float64 `json:"seconds"` // from the attack's start to the alert's time, per trial
	Median    float64   `json:"median_seconds"`
	Max       float64   `json:"max_seconds"`
}

// TestBenchDetection measures each detector's latency end to end in a two-node lab, on both
// dataplanes: from the moment a real attack starts (nmap, hping3, an ordinary client) to the
// time the node's engine raised the alert, read back through `rampart lab alerts`. Clients live
// on node-2 and their targets on node-1, so every alert crosses the dataplane's event path and
// the node that judges. Results: bench/results/detection.json.
func TestBenchDetection(t *testing.T) {
	if os.Getenv("RAMPART_BENCH") == "" {
		t.Skip("set RAMPART_BENCH=1 (make bench) to run the detection-latency benchmark")
	}
	netnstest.RequireRoot(t, "iptables-restore", "ipset", "nmap", "hping3")
	bin := filepath.Join(t.TempDir(), "rampart")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/rampart").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var results []detectionResult
	for _, dp := range []string{"iptables", "ebpf"} {
		results = append(results, detection(t, bin, dp)...)
	}
	b, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile("results/detection.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func detection(t *testing.T, bin, dp string) []detectionResult {
	dir := t.TempDir()
	name := fmt.Sprintf("bd%d", rand.Intn(100000))
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{args[0], "--name", name}, args[1:]...)...).CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("rampart %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	write := func(file, body string) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var cluster strings.Builder
	cluster.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n")
	pod := func(name, node, ip, ports string) {
		fmt.Fprintf(&cluster, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: app, labels: {name: %s}}\nspec: {nodeName: %s, containers: [{name: c, image: x%s}]}\nstatus: {podIP: %s}\n",
			name, name, node, ports, ip)
	}
	for i := 0; i < 4*detectionTrials; i++ {
		pod(fmt.Sprintf("c%d", i), "node-2", fmt.Sprintf("10.244.2.%d", 10+i), "")
		pod(fmt.Sprintf("s%d", i), "node-1", fmt.Sprintf("10.244.1.%d", 10+i), ", ports: [{containerPort: 80}]")
	}
	pod("listed", "node-1", "10.244.1.200", ", ports: [{containerPort: 80}]")
	pod("decoy", "node-1", "10.244.1.201", ", ports: [{containerPort: 5432}]")
	must("lab", "up", "--nodes", "2", "--dataplane", dp, "-f", write("cluster.yaml", cluster.String()))
	t.Cleanup(func() {
		if out, err := run("lab", "down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	feed := write("feed.netset", "10.244.1.200\n")
	must("lab", "apply", "-f", write("td.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    portScan: {action: alert}
    synFlood: {action: alert, minRate: 200}
  feeds: [{name: bench, file: `+feed+`, action: alert}]
  honeypots: [{namespace: app, pod: decoy}]
`))
	exec1 := func(pod string, argv ...string) {
		_, _ = run(append([]string{"lab", "exec", "app/" + pod, "--"}, argv...)...)
	}
	attacks := []struct {
		detector, attack string
		run              func(client, server string)
	}{
		{threat.TypePortScan, "nmap -sS, 200 ports", func(c, s string) {
			exec1(c, "timeout", "20", "nmap", "-Pn", "-n", "--max-retries", "1", "-T4", "-sS", "-p", "1-200", s)
		}},
		{threat.TypeSynFlood, "hping3 -S at 2,000/s for 2 s", func(c, s string) {
			exec1(c, "timeout", "10", "hping3", "-q", "-S", "-p", "80", "-i", "u500", "-c", "4000", s)
		}},
		{threat.TypeThreatFeed, "one TCP connection to a listed address", func(c, _ string) {
			exec1(c, "timeout", "2", "bash", "-c", "echo > /dev/tcp/10.244.1.200/80")
		}},
		{threat.TypeHoneypot, "one TCP connection to the decoy", func(c, _ string) {
			exec1(c, "timeout", "2", "bash", "-c", "echo > /dev/tcp/10.244.1.201/5432")
		}},
	}
	var out []detectionResult
	for ai, a := range attacks {
		res := detectionResult{Dataplane: dp, Detector: a.detector, Attack: a.attack}
		for trial := 0; trial < detectionTrials; trial++ {
			i := ai*detectionTrials + trial
			client, server := fmt.Sprintf("c%d", i), fmt.Sprintf("10.244.1.%d", 10+i)
			start := time.Now()
			a.run(client, server)
			var at time.Time
			for deadline := time.Now().Add(15 * time.Second); at.IsZero(); time.Sleep(50 * time.Millisecond) {
				for _, line := range strings.Split(strings.TrimSpace(must("lab", "alerts", "-o", "json", "--type", a.detector)), "\n") {
					var al threat.Alert
					if line == "" || json.Unmarshal([]byte(line), &al) != nil {
						continue
					}
					if al.Source.Pod == client && !al.Time.Before(start) {
						at = al.Time
					}
				}
				if at.IsZero() && time.Now().After(deadline) {
					t.Fatalf("%s: no %s alert naming app/%s within 15s", dp, a.detector, client)
				}
			}
			res.Seconds = append(res.Seconds, at.Sub(start).Seconds())
		}
		res.Median, res.Max = median(res.Seconds), maxOf(res.Seconds)
		t.Logf("%-8s %-12s median %.2fs, max %.2fs (%s)", dp, a.detector, res.Median, res.Max, a.attack)
		out = append(out, res)
	}
	return out
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
