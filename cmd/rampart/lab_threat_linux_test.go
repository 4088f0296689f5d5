package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/threat"
)

// TestLabThreat attacks lab pods with real tools (nmap, bounded in ports, retries and time;
// aimed only at the lab's addresses) on both dataplanes and checks, through the CLI, that each
// scan is reported within its window naming both ends, that a decoy names who touched it, that
// benign traffic raises nothing, and that a bad ThreatDefense is refused naming the field.
func TestLabThreat(t *testing.T) {
	netnstest.RequireRoot(t, "ip", "iptables-restore", "ipset", "nmap")
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) { testLabThreat(t, dp) })
	}
}

func testLabThreat(t *testing.T, dp string) {
	dir := t.TempDir()
	bin := rampartBinary(t)
	name := fmt.Sprintf("t%d", rand.Intn(1000000))
	run, must := labCommands(t, bin, name)
	t.Cleanup(func() {
		if out, err := run("lab", "down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	must("lab", "up", "--nodes", "2", "--dataplane", dp, "-f", "../../test/threat/cluster.yaml")
	var pods []struct{ Namespace, Name, IP, Node string }
	if err := json.Unmarshal([]byte(must("lab", "get", "pods", "-o", "json")), &pods); err != nil {
		t.Fatal(err)
	}
	ip, node := map[string]string{}, map[string]string{}
	for _, p := range pods {
		ip[p.Namespace+"/"+p.Name], node[p.Namespace+"/"+p.Name] = p.IP, p.Node
	}
	write := func(file, body string) string {
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	// lab exec passes a failing command's output and exit code on, as kubectl exec does.
	out, err := run("lab", "exec", "app/client", "--", "bash", "-c", "echo partial; exit 3")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(out, "partial") {
		t.Fatalf("lab exec of a failing command: %v\n%s", err, out)
	}

	bad := write("bad.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    synFlood: {action: explode}
`)
	if out, err := run("lab", "apply", "-f", bad); err == nil || !strings.Contains(out, "spec.detectors.synFlood.action") {
		t.Fatalf("bad ThreatDefense: err %v\n%s", err, out)
	}
	must("lab", "apply", "-f", write("td.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    portScan: {action: alert}
  honeypots:
  - {namespace: decoy, pod: db-0}
`))
	missing := write("missing.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  feeds:
  - {name: gone, file: `+filepath.Join(dir, "no-such-list")+`}
`)
	if out, err := run("lab", "apply", "-f", missing); err == nil || !strings.Contains(out, "spec.feeds[0]") {
		t.Fatalf("missing feed: err %v\n%s", err, out)
	}

	alerts := func() []threat.Alert {
		var out []threat.Alert
		for _, line := range strings.Split(strings.TrimSpace(must("lab", "alerts", "-o", "json")), "\n") {
			if line == "" {
				continue
			}
			var a threat.Alert
			if err := json.Unmarshal([]byte(line), &a); err != nil {
				t.Fatalf("alert %q: %v", line, err)
			}
			out = append(out, a)
		}
		return out
	}
	exec1 := func(pod string, argv ...string) {
		t.Helper()
		// A closed port's refusal is not a failure of the exec.
		_, _ = run(append([]string{"lab", "exec", pod, "--"}, argv...)...)
	}

	// Benign: a busy client opening hundreds of connections to the server's two open ports,
	// with retries, raises nothing.
	exec1("app/busy", "bash", "-c", fmt.Sprintf(`for i in $(seq 1 150); do for p in 80 443 80; do timeout 1 bash -c "echo > /dev/tcp/%s/$p" 2>/dev/null; done; done`, ip["app/server"]))
	time.Sleep(1500 * time.Millisecond) // the flow events of the last connections reach the agent
	if got := alerts(); len(got) != 0 {
		t.Fatalf("benign traffic raised alerts: %+v", got)
	}

	// Each scan: started, then the alert must be there within 10 seconds of its start.
	scans := []struct {
		name, from string
		argv       []string
		scan       string
		target     string // "" for a horizontal scan
	}{
		{"SYN", "app/client", []string{"-sS", "-p", "1-300", ip["app/server"]}, "tcp-syn", "app/server"},
		{"connect", "app/client", []string{"-sT", "-p", "1000-1100", ip["app/server"]}, "tcp-syn", "app/server"},
		{"UDP", "app/server", []string{"-sU", "-p", "2000-2040", ip["app/client"]}, "udp", "app/client"},
		{"FIN", "app/client", []string{"-sF", "-p", "3000-3040", ip["app/server"]}, "tcp-fin", "app/server"},
		// The nodes' pod ranges: routed, and mostly addresses where no pod lives.
		{"horizontal, addresses with no pod", "app/client", []string{"-sS", "-p", "22", "10.244.1.0/27", "10.244.2.0/27"}, "tcp-syn", ""},
	}
	for _, sc := range scans {
		start := time.Now()
		exec1(sc.from, append([]string{"timeout", "20", "nmap", "-Pn", "-n", "--max-retries", "1", "-T4"}, sc.argv...)...)
		var found *threat.Alert
		for found == nil && time.Since(start) < 10*time.Second {
			for _, a := range alerts() {
				if a.Type == threat.TypePortScan && a.Evidence.Scan == sc.scan && a.Source.Namespace+"/"+a.Source.Pod == sc.from &&
					(a.Target.Namespace+"/"+a.Target.Pod == sc.target || (sc.target == "" && a.Target.IP == "" && len(a.Evidence.Hosts) >= 25)) && !a.Time.Before(start) {
					found = &a
					break
				}
			}
			if found == nil {
				time.Sleep(200 * time.Millisecond)
			}
		}
		if found == nil {
			t.Errorf("%s scan from %s: no port-scan alert within 10s; alerts: %+v", sc.name, sc.from, alerts())
		}
	}

	start := time.Now()
	exec1("app/busy", "bash", "-c", fmt.Sprintf(`timeout 1 bash -c "echo > /dev/tcp/%s/5432"`, ip["decoy/db-0"]))
	for {
		var ok bool
		for _, a := range alerts() {
			ok = ok || (a.Type == threat.TypeHoneypot && a.Source.Pod == "busy" && a.Target.Pod == "db-0")
		}
		if ok {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("no honeypot alert naming app/busy: %+v", alerts())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, a := range alerts() {
		if a.Source.Pod == "busy" && a.Type != threat.TypeHoneypot {
			t.Errorf("the benign client raised %+v", a)
		}
	}

	// A client on the server's node and one on the other node.
	var sources []string
	for _, c := range []string{"app/busy", "app/client", "decoy/db-0"} {
		if len(sources) == 0 || (len(sources) == 1 && (node[c] == node["app/server"]) != (node[sources[0]] == node["app/server"])) {
			sources = append(sources, c)
		}
	}
	if len(sources) != 2 {
		t.Fatalf("want pods on both nodes, placed: %v", node)
	}
	explain := func(from, to string, port int) (string, error) {
		out, err := exec.Command(bin, "explain", "--live", "--lab", name, "--from", from, "--to", to, "--port", fmt.Sprint(port)).CombinedOutput()
		return string(out), err
	}
	testLabFeedBlock(t, ip["app/server"], sources, write, must, exec1Status(run), alerts, explain)
	testLabSynFlood(t, ip["app/server"], write, must, run, alerts)
	testLabQuarantine(t, ip, write, must, exec1Status(run), alerts, explain)
	testLabShield(t, ip["app/server"], write, must, run, alerts)
	testLabConnectionLimit(t, ip["app/server"], write, must, run, alerts)
}

// connectScript, run in a pod, opens up to n TCP connections to an address and port one after
// the other (each given timeout seconds), holding those that connect; with reopen, it then
// closes one and opens another. It prints {"held": N, "reopened": bool}.
const connectScript = `
import json, socket, sys, time
ip, port, n, timeout, reopen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
def connect():
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return s
    except OSError:
        s.close()
        return None
held = [s for s in (connect() for _ in range(n)) if s]
out = {"held": len(held), "reopened": False}
if reopen and held:
    held.pop().close()
    time.sleep(0.3)
    out["reopened"] = connect() is not None
print(json.dumps(out))
`

// testLabConnectionLimit shields the server (connection-limit): a client holds at most its
// limit of open connections, one more after closing one, and raises a shield alert; a tight
// rate lets a quick series of new connections through only in part.
func testLabConnectionLimit(t *testing.T, server string, write func(file, body string) string, must func(args ...string) string,
	run func(args ...string) (string, error), alerts func() []threat.Alert) {
	t.Helper()
	connect := func(n int, timeout string, reopen bool) (held int, reopened bool) {
		t.Helper()
		r := "0"
		if reopen {
			r = "1"
		}
		out := must("lab", "exec", "app/client", "--", "timeout", "60", "python3", "-c", connectScript, server, "80", fmt.Sprint(n), timeout, r)
		var res struct {
			Held     int  `json:"held"`
			Reopened bool `json:"reopened"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &res); err != nil {
			t.Fatalf("connect script: %v\n%s", err, out)
		}
		return res.Held, res.Reopened
	}
	must("lab", "apply", "-f", write("td-connlimit.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  shields:
  - {name: connection-limit, selector: {matchLabels: {role: server}}, connectionLimit: {concurrent: 3, perSecond: 1000}}
`))
	start := time.Now()
	if held, reopened := connect(5, "1.5", true); held != 3 || !reopened {
		t.Errorf("5 connections to a server shielded at 3 per source: %d held, another after closing one: %v; want 3, true", held, reopened)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		found := false
		for _, a := range alerts() {
			found = found || (a.Type == threat.TypeShield && a.Source.Pod == "client" && a.Target.Pod == "server" &&
				strings.Contains(a.Message, "holds 3 open TCP connections") && !a.Time.Before(start))
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection-limit alert naming app/client and app/server: %+v", alerts())
		}
	}
	// The connections closed, the count is back: the limit holds again at 3, not less.
	if held, _ := connect(4, "1.5", false); held != 3 {
		t.Errorf("after the first client's connections closed: %d held, want 3", held)
	}
	must("lab", "apply", "-f", write("td-connrate.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  shields:
  - {name: connection-limit, selector: {matchLabels: {role: server}}, connectionLimit: {concurrent: 1000, perSecond: 2, burst: 4}}
`))
	if held, _ := connect(20, "0.2", false); held < 4 || held > 12 {
		t.Errorf("20 quick connections at 2 a second (burst 4): %d connected, want the burst and a few more", held)
	}
	must("lab", "delete", "threatdefense", "default")
	if held, _ := connect(20, "1", false); held != 20 {
		t.Errorf("without the shield: %d of 20 connections", held)
	}
}

// testLabShield shields the server (sack-panic): hping3 SYNs with an MSS of 48 get no answer
// and raise a shield alert naming both pods, while SYNs with an ordinary MSS are answered.
func testLabShield(t *testing.T, server string, write func(file, body string) string, must func(args ...string) string,
	run func(args ...string) (string, error), alerts func() []threat.Alert) {
	t.Helper()
	must("lab", "apply", "-f", write("td-shield.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  shields: [{name: sack-panic, selector: {matchLabels: {role: server}}}]
`))
	syns := func(mss int) (sent, answered int) {
		return hping(t, run, "timeout", "10", "hping3", "-q", "-S", "-p", "80", "--tcp-mss", fmt.Sprint(mss), "-c", "5", "-i", "u200000", server)
	}
	start := time.Now()
	if sent, answered := syns(48); sent != 5 || answered != 0 {
		t.Errorf("SYNs with MSS 48 to a shielded pod: %d of %d answered, want none", answered, sent)
	}
	if sent, answered := syns(1460); answered < 3 {
		t.Errorf("SYNs with MSS 1460 to a shielded pod: %d of %d answered", answered, sent)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		found := false
		for _, a := range alerts() {
			found = found || (a.Type == threat.TypeShield && a.Source.Pod == "client" && a.Target.Pod == "server" && !a.Time.Before(start))
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no shield alert naming app/client and app/server: %+v", alerts())
		}
	}
}

// testLabQuarantine quarantines a pod by hand (lab quarantine) and by a decoy's response, and
// checks that its connections are cut while other pods' are not, and that lab release restores
// them.
func testLabQuarantine(t *testing.T, ip map[string]string, write func(file, body string) string, must func(args ...string) string,
	ok func(pod string, argv ...string) bool, alerts func() []threat.Alert, explain func(from, to string, port int) (string, error)) {
	t.Helper()
	// explain --live says why, both for a quarantine by hand and for a detector's, and agrees
	// with the dataplanes (a disagreement fails the command).
	explains := func(from, want string) {
		t.Helper()
		out, err := explain(from, "app/server", 80)
		if err != nil || !strings.HasPrefix(out, "DENIED") || !strings.Contains(out, want) {
			t.Errorf("explain --live %s -> app/server:80: %v, want DENIED because %q:\n%s", from, err, want, out)
		}
	}
	reach := func(from string) bool {
		for i := 0; i < 3; i++ {
			if ok(from, "timeout", "2", "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/80", ip["app/server"])) {
				return true
			}
		}
		return false
	}
	must("lab", "quarantine", "app/client")
	if reach("app/client") {
		t.Error("a quarantined pod still reaches the server")
	}
	if !reach("app/busy") {
		t.Error("quarantining app/client cut app/busy off too")
	}
	explains("app/client", "app/client is quarantined (rampart.io/quarantine), and may only reach 53/UDP, 53/TCP")
	must("lab", "release", "app/client")
	if !reach("app/client") {
		t.Error("a released pod cannot reach the server")
	}

	must("lab", "apply", "-f", write("td-quarantine.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  honeypots:
  - {namespace: decoy, pod: db-0, action: quarantine}
`))
	start := time.Now()
	ok("app/busy", "timeout", "1", "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/5432", ip["decoy/db-0"]))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		found := false
		for _, a := range alerts() {
			found = found || (a.Type == threat.TypeHoneypot && a.Source.Pod == "busy" && a.Response == "quarantine" && !a.Time.Before(start))
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no honeypot alert quarantining app/busy: %+v", alerts())
		}
	}
	if reach("app/busy") {
		t.Error("the pod the decoy quarantined still reaches the server")
	}
	explains("app/busy", "app/busy is quarantined")
	released := time.Now()
	must("lab", "release", "app/busy")
	if !reach("app/busy") {
		t.Errorf("released at %s from its automatic quarantine, app/busy cannot reach the server; alerts: %+v", released.Format(time.RFC3339Nano), alerts())
	}
}

// hpingStats matches hping3's closing statistics.
var hpingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)

// hping runs hping3 (argv) in app/client and returns the packets it sent and the answers it
// counted (it exits non-zero when none came).
func hping(t *testing.T, run func(args ...string) (string, error), argv ...string) (sent, answered int) {
	t.Helper()
	out, _ := run(append([]string{"lab", "exec", "app/client", "--"}, argv...)...)
	m := hpingStats.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("hping3 printed no statistics:\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	answered, _ = strconv.Atoi(m[2])
	return sent, answered
}

// testLabSynFlood floods the server with hping3 SYNs from app/client (bounded in count and
// time, aimed at the server alone): a syn-flood alert names the server and the rate limit it
// took; a second flood under the limit gets no more answers than the limit's burst and rate
// allow, while another pod keeps connecting to the server throughout.
func testLabSynFlood(t *testing.T, server string, write func(file, body string) string, must func(args ...string) string,
	run func(args ...string) (string, error), alerts func() []threat.Alert) {
	t.Helper()
	must("lab", "apply", "-f", write("td-flood.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  detectors:
    synFlood: {action: rateLimit, minRate: 200, perSource: 20, burst: 40}
`))
	// flood sends count SYNs at 2,000 a second and returns what was sent and answered.
	flood := func(count int) (sent, answered int) {
		return hping(t, run, "timeout", "20", "hping3", "-q", "-S", "-p", "80", "-i", "u500", "-c", fmt.Sprint(count), server)
	}
	start := time.Now()
	sent, answered := flood(4000)
	// Before the limit took hold the server answered: hping3 counts answers, so the bound on
	// the second flood below means something.
	if answered < 300 {
		t.Fatalf("first flood: %d of %d SYNs answered, want hundreds before the limit", answered, sent)
	}
	var found *threat.Alert
	for deadline := time.Now().Add(10 * time.Second); found == nil; time.Sleep(200 * time.Millisecond) {
		for _, a := range alerts() {
			if a.Type == threat.TypeSynFlood && a.Target.Pod == "server" && !a.Time.Before(start) {
				found = &a
			}
		}
		if found == nil && time.Now().After(deadline) {
			t.Fatalf("no syn-flood alert naming the server within 10s of the flood: %+v", alerts())
		}
	}
	if found.Response != "rateLimit" || found.Source.Pod != "client" {
		t.Errorf("syn-flood alert %+v: want response rateLimit and source app/client", *found)
	}

	// Under the limit: a legitimate client keeps connecting while the flood goes on.
	done := make(chan struct{})
	var legit, legitOK int
	go func() {
		defer close(done)
		for i := 0; i < 10; i++ {
			legit++
			for try := 0; try < 3; try++ {
				if _, err := run("lab", "exec", "app/busy", "--", "timeout", "2", "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/80", server)); err == nil {
					legitOK++
					break
				}
			}
		}
	}()
	floodStart := time.Now()
	sent, answered = flood(6000)
	took := time.Since(floodStart)
	<-done
	if sent < 3000 {
		t.Fatalf("second flood sent only %d SYNs", sent)
	}
	// The burst, the rate over the flood's time, and a little for the bucket's approximation.
	if limit := 40 + int(20*took.Seconds()) + 20; answered > limit {
		t.Errorf("under the limit %d of %d SYNs were answered in %v, want at most %d", answered, sent, took, limit)
	}
	if legitOK != legit {
		t.Errorf("during the flood the legitimate client connected %d of %d times", legitOK, legit)
	}
}

// exec1Status runs a command in a lab pod and reports whether it exited 0.
func exec1Status(run func(args ...string) (string, error)) func(pod string, argv ...string) bool {
	return func(pod string, argv ...string) bool {
		_, err := run(append([]string{"lab", "exec", pod, "--"}, argv...)...)
		return err == nil
	}
}

// testLabFeedBlock lists the server's address in a netset feed with action block: the server
// becomes unreachable from a pod on its own node and from one on the other node, threat-feed
// alerts name the feed and both ends, and re-applying the feed without the entry restores
// reachability.
func testLabFeedBlock(t *testing.T, server string, sources []string, write func(file, body string) string, must func(args ...string) string,
	ok func(pod string, argv ...string) bool, alerts func() []threat.Alert, explain func(from, to string, port int) (string, error)) {
	t.Helper()
	// explain --live says why, naming the feed, and agrees with the dataplanes (a disagreement
	// fails the command).
	explains := func(from, want string) {
		t.Helper()
		out, err := explain(from, "app/server", 80)
		if err != nil || !strings.HasPrefix(out, "DENIED") || !strings.Contains(out, want) {
			t.Errorf("explain --live %s -> app/server:80: %v, want DENIED because %q:\n%s", from, err, want, out)
		}
	}
	// reach retries a connection (a starved probe is retried, not taken for a drop); unreachable
	// needs every try to fail.
	reach := func(from, addr string) bool {
		for i := 0; i < 3; i++ {
			if ok(from, "timeout", "2", "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/80", addr)) {
				return true
			}
		}
		return false
	}
	for _, from := range sources {
		if !reach(from, server) {
			t.Fatalf("%s cannot reach the server before any feed", from)
		}
	}
	td := func(list string) string {
		feed := write("feed.netset", list)
		return write("td-feed.yaml", `apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  feeds:
  - {name: blocklist-a, file: `+feed+`, format: netset, action: block}
`)
	}
	start := time.Now()
	must("lab", "apply", "-f", td("# FireHOL-style list\n203.0.113.0/24\n"+server+"\n"))
	for _, from := range sources {
		if reach(from, server) {
			t.Errorf("%s still reaches the server listed by the feed", from)
		}
		explains(from, "is in "+server+"/32, blocked by threat feed blocklist-a")
	}
	// Each source's blocked attempts are alerted on by its own node.
	var feedAlerts []threat.Alert
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		feedAlerts = feedAlerts[:0]
		seen := map[string]bool{}
		for _, a := range alerts() {
			if a.Type == threat.TypeThreatFeed {
				feedAlerts = append(feedAlerts, a)
				if a.Feed == "blocklist-a" && a.Target.Pod == "server" && a.Response == "block" && !a.Time.Before(start) {
					seen[a.Source.Namespace+"/"+a.Source.Pod] = true
				}
			}
		}
		if len(seen) == len(sources) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("want a threat-feed alert naming blocklist-a, the server and each of %v; threat-feed alerts: %+v", sources, feedAlerts)
			break
		}
	}
	must("lab", "apply", "-f", td("203.0.113.0/24\n"))
	for _, from := range sources {
		if !reach(from, server) {
			t.Errorf("%s cannot reach the server after its entry left the feed", from)
		}
	}
}

// TestLabKubeThreat: in a --kube lab the node agents (separate processes) take the
// ThreatDefense from their --threat-config file, as a DaemonSet's agents take it from their
// ConfigMap: lab apply writes it and returns once every agent has it in force; a feed listing
// the server blocks it in the kernel and a decoy raises its alert; lab delete turns it off.
func TestLabKubeThreat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver and agent processes")
	}
	netnstest.RequireRoot(t, "ip", "iptables-restore", "ipset")
	dir := t.TempDir()
	bin := rampartBinary(t)
	name := fmt.Sprintf("kt%d", rand.Intn(100000))
	run, must := labCommands(t, bin, name)
	t.Cleanup(func() { _, _ = run("lab", "down") })
	must("lab", "up", "--kube", "--nodes", "2", "--dataplane", "iptables", "-f", "../../test/threat/cluster.yaml")
	var pods []struct{ Namespace, Name, IP string }
	if err := json.Unmarshal([]byte(must("lab", "get", "pods", "-o", "json")), &pods); err != nil {
		t.Fatal(err)
	}
	ip := map[string]string{}
	for _, p := range pods {
		ip[p.Namespace+"/"+p.Name] = p.IP
	}
	connects := func(from, to string, port int) bool {
		_, err := run("lab", "exec", from, "--", "timeout", "2", "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/%d", ip[to], port))
		return err == nil
	}
	if !connects("app/client", "app/server", 80) {
		t.Fatal("client cannot reach the server before any ThreatDefense")
	}
	list := filepath.Join(dir, "list.netset")
	if err := os.WriteFile(list, []byte(ip["app/server"]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	td := filepath.Join(dir, "td.yaml")
	if err := os.WriteFile(td, []byte(`apiVersion: rampart.io/v1alpha1
kind: ThreatDefense
metadata: {name: default}
spec:
  feeds:
  - {name: listed, file: `+list+`, action: block}
  honeypots:
  - {namespace: decoy, pod: db-0}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	must("lab", "apply", "-f", td) // returns once every agent has it in force
	if connects("app/client", "app/server", 80) {
		t.Error("the listed server is still reachable with the ThreatDefense in force")
	}
	start := time.Now()
	_, _ = run("lab", "exec", "app/busy", "--", "timeout", "1", "bash", "-c", "echo > /dev/tcp/"+ip["decoy/db-0"]+"/5432")
	for found := false; !found; time.Sleep(200 * time.Millisecond) {
		for _, line := range strings.Split(must("lab", "alerts", "-o", "json"), "\n") {
			var a threat.Alert
			if json.Unmarshal([]byte(line), &a) == nil && a.Type == threat.TypeHoneypot && a.Source.Pod == "busy" && a.Target.Pod == "db-0" {
				found = true
			}
		}
		if !found && time.Since(start) > 10*time.Second {
			t.Fatalf("no honeypot alert from the --kube lab's agents:\n%s", must("lab", "alerts"))
		}
	}
	// Applying the same document again reloads every feed at once: the list, changed on disk,
	// is in force when apply returns, long before its hourly refresh.
	reapply := func(content, want string, reachable bool) {
		t.Helper()
		if err := os.WriteFile(list, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		must("lab", "apply", "-f", td)
		got := connects("app/client", "app/server", 80)
		for i := 0; i < 2 && reachable && !got; i++ { // a probe starved on 2 cores is retried
			got = connects("app/client", "app/server", 80)
		}
		if got != reachable {
			t.Errorf("after applying the same ThreatDefense again with %s: server reachable %v", want, got)
		}
	}
	reapply("# emptied\n", "the server taken off the list", true)
	reapply(ip["app/server"]+"\n", "the server listed again", false)
	must("lab", "delete", "threatdefense", "default")
	unblocked := false
	for i := 0; i < 2 && !unblocked; i++ { // a probe starved on 2 cores is retried
		unblocked = connects("app/client", "app/server", 80)
	}
	if !unblocked {
		t.Error("the server stays blocked after the ThreatDefense's deletion")
	}
}
