package main

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
	run := func(args ...string) (string, error) {
		// --name before any "--" of lab exec: `rampart lab --name N ...`.
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
	t.Cleanup(func() {
		if out, err := run("lab", "down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	must("lab", "up", "--nodes", "2", "--dataplane", dp, "-f", "../../test/threat/cluster.yaml")
	var pods []struct{ Namespace, Name, IP string }
	if err := json.Unmarshal([]byte(must("lab", "get", "pods", "-o", "json")), &pods); err != nil {
		t.Fatal(err)
	}
	ip := map[string]string{}
	for _, p := range pods {
		ip[p.Namespace+"/"+p.Name] = p.IP
	}
	write := func(file, body string) string {
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
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
}
