package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/labtest"
)

const benchCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {pod: client}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: x, labels: {pod: server}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: server-remote, namespace: x, labels: {pod: server}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.2.11}
`

// paths are the two servers the client measures: on its own node, and on the other one.
var paths = []struct {
	name string
	dst  netip.AddrPort
}{{"same node", netip.MustParseAddrPort("10.244.1.11:80")}, {"across nodes", netip.MustParseAddrPort("10.244.2.11:80")}}

// tenThousandRules: 100 NetworkPolicies selecting the server, each with 100 ingress rules
// (an external /32 on port 80), plus the rule that admits the client.
func tenThousandRules() string { return rules(10000, "[{port: 80}]") }

// rules: n ingress rules selecting the server, n-1 of them external /32s on port 80 in
// policies of up to 100 rules, plus the rule that admits the client on clientPorts.
func rules(n int, clientPorts string) string {
	var b strings.Builder
	for p := 0; p*100 < n-1; p++ {
		fmt.Fprintf(&b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np-%d, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: server}}\n  ingress:\n", p)
		for r := 0; r < 100 && p*100+r < n-1; r++ {
			fmt.Fprintf(&b, "  - {from: [{ipBlock: {cidr: 172.16.%d.%d/32}}], ports: [{port: 80}]}\n", p, r)
		}
	}
	// Named to come last: iptables walks NetworkPolicies in name order, and a new connection from
	// the client is to be judged after every other rule, as in the worst case.
	fmt.Fprintf(&b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: zz-allow-client, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: server}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: client}}}], ports: %s}]\n", clientPorts)
	return b.String()
}

type dpResult struct {
	Mode            string  `json:"mode"`
	Path            string  `json:"path"` // same node, or across nodes
	Rules           int     `json:"rules"`
	ThroughputMBps  float64 `json:"throughput_mb_per_s"`
	RequestsPerSec  float64 `json:"request_response_per_s"`
	ThroughputRatio float64 `json:"throughput_ratio_to_baseline"`
	RRRatio         float64 `json:"rr_ratio_to_baseline"`
	Runs            int     `json:"runs"`
	// Per round, this mode over the baseline measured right before it: the spread shows the
	// machine's noise, and pairing by round cancels slow drift.
	ThroughputRatioRounds []float64 `json:"throughput_ratio_per_round"`
	RRRatioRounds         []float64 `json:"rr_ratio_per_round"`
	// Against the same dataplane without policy, per-round pairs too: what the rules cost.
	ThroughputRatioSameDataplane float64 `json:"throughput_ratio_to_same_dataplane_without_policy,omitempty"`
	RRRatioSameDataplane         float64 `json:"rr_ratio_to_same_dataplane_without_policy,omitempty"`
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// TestBenchDataplanes measures established TCP flows from a client pod to a server on its own
// node and to one on the other node of a 2-node lab: bulk throughput and one-line
// request/response rate, for the same topology with no policy (the baseline), for each
// dataplane without policy, and with 10,000 rules under each dataplane. Set-ups are measured
// round-robin, seven rounds of 2 s each (machines are noisy), each against the baseline of the
// same round and path, and medians reported. Results go to bench/results/dataplane.json.
func TestBenchDataplanes(t *testing.T) {
	if os.Getenv("RAMPART_BENCH") == "" {
		t.Skip("set RAMPART_BENCH=1 (make bench) to run the dataplane benchmark")
	}
	ctx := context.Background()
	modes := []struct {
		name, dataplane string
		rules           int
		ref             int // index of the same dataplane without policy, for the cost of the rules alone
	}{{"baseline: no policy", "none", 0, 0}, {"iptables, no policy", "iptables", 0, 0}, {"iptables", "iptables", 10000, 1},
		{"ebpf, no policy", "ebpf", 0, 0}, {"ebpf", "ebpf", 10000, 3}}
	labs := make([]labtest.Lab, len(modes))
	for i, m := range modes {
		labs[i] = labtest.New(t, 2, m.dataplane, benchCluster)
		if m.rules > 0 {
			start := time.Now()
			if err := labs[i].Apply(ctx, tenThousandRules()); err != nil {
				t.Fatalf("%s: apply: %v", m.name, err)
			}
			t.Logf("%s: 10,000 rules applied in %s", m.name, time.Since(start).Round(time.Millisecond))
		}
	}
	// tput[i][p], rr[i][p]: mode i, path p, one figure per round.
	tput := make([][][]float64, len(modes))
	rr := make([][][]float64, len(modes))
	for i := range modes {
		tput[i], rr[i] = make([][]float64, len(paths)), make([][]float64, len(paths))
	}
	for round := 0; round < 7; round++ {
		for i, m := range modes {
			for p, path := range paths {
				b, r, err := labs[i].Fabric.Load(ctx, "x", "client", path.dst, 2*time.Second)
				if err != nil {
					t.Fatalf("%s, %s: %v", m.name, path.name, err)
				}
				tput[i][p] = append(tput[i][p], b/1e6)
				rr[i][p] = append(rr[i][p], r)
			}
		}
	}
	var results []dpResult
	for p, path := range paths {
		for i, m := range modes {
			var tr, rrr []float64
			for r := range tput[i][p] {
				tr = append(tr, round3(tput[i][p][r]/tput[0][p][r]))
				rrr = append(rrr, round3(rr[i][p][r]/rr[0][p][r]))
			}
			res := dpResult{Mode: m.name, Path: path.name, Rules: m.rules, ThroughputMBps: median(tput[i][p]), RequestsPerSec: median(rr[i][p]),
				ThroughputRatio: median(tr), RRRatio: median(rrr), Runs: len(tput[i][p]), ThroughputRatioRounds: tr, RRRatioRounds: rrr}
			if m.ref != 0 {
				var st, sr []float64
				for r := range tput[i][p] {
					st = append(st, tput[i][p][r]/tput[m.ref][p][r])
					sr = append(sr, rr[i][p][r]/rr[m.ref][p][r])
				}
				res.ThroughputRatioSameDataplane, res.RRRatioSameDataplane = round3(median(st)), round3(median(sr))
			}
			results = append(results, res)
		}
	}
	b, _ := json.MarshalIndent(results, "", "  ")
	t.Logf("\n%s", b)
	if err := os.WriteFile("results/dataplane.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
