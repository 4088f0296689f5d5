package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
)

// connCluster is benchCluster with the servers answering UDP on port 80 too.
var connCluster = strings.ReplaceAll(benchCluster, "ports: [{containerPort: 80}]", "ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]")

const connClientPorts = "[{port: 80}, {port: 80, protocol: UDP}]"

type connResult struct {
	Mode  string `json:"mode"`
	Flows bool   `json:"flow_records"`
	Path  string `json:"path"`
	Rules int    `json:"rules"`
	// New connections per second: TCP connect, request, server close; UDP request/reply from
	// a new socket. Failed attempts are counted (there should be none).
	TCPPerSec   float64 `json:"tcp_connections_per_s"`
	UDPPerSec   float64 `json:"udp_exchanges_per_s"`
	TCPFailed   int     `json:"tcp_failed"`
	UDPFailed   int     `json:"udp_failed"`
	TCPRatio    float64 `json:"tcp_ratio_to_baseline"`
	UDPRatio    float64 `json:"udp_ratio_to_baseline"`
	TCPRatioOne float64 `json:"tcp_ratio_to_same_dataplane_1_rule,omitempty"`
	UDPRatioOne float64 `json:"udp_ratio_to_same_dataplane_1_rule,omitempty"`
	// Established request/response on one connection (flow-record cost), per second.
	RRPerSec  float64   `json:"request_response_per_s,omitempty"`
	RRRatio   float64   `json:"rr_ratio_to_baseline,omitempty"`
	TCPRounds []float64 `json:"tcp_ratio_per_round"`
	UDPRounds []float64 `json:"udp_ratio_per_round"`
}

// TestBenchConnections measures the new-connection rate, where rules are really consulted:
// with no dataplane (the baseline), and under each dataplane with 1, 100, 1,000 and 10,000
// rules selecting the server, flow records on; and with 1 rule and flow records off, which
// with the established request/response rate measured for the same set-ups gives what flow
// records cost. Set-ups are measured round-robin, five rounds of 1 s per protocol and path;
// ratios are medians of per-round ratios to the baseline of the same round. Results go to
// bench/results/connections.json.
func TestBenchConnections(t *testing.T) {
	if os.Getenv("RAMPART_BENCH") == "" {
		t.Skip("set RAMPART_BENCH=1 (make bench) to run the connection benchmark")
	}
	ctx := context.Background()
	type mode struct {
		name, dataplane string
		rules           int
		flows           bool
	}
	modes := []mode{{"baseline: no dataplane", "none", 0, false}}
	for _, dp := range []string{"iptables", "ebpf"} {
		for _, n := range []int{1, 100, 1000, 10000} {
			modes = append(modes, mode{dp, dp, n, true})
		}
		modes = append(modes, mode{dp + ", flow records off", dp, 1, false})
	}
	labs := make([]labtest.Lab, len(modes))
	for i, m := range modes {
		labs[i] = labtest.NewWith(t, controller.Settings{Nodes: 2, Dataplane: m.dataplane, NoFlows: !m.flows}, connCluster)
		if m.rules > 0 {
			if err := labs[i].Apply(ctx, rules(m.rules, connClientPorts)); err != nil {
				t.Fatalf("%s, %d rules: %v", m.name, m.rules, err)
			}
		}
	}
	one := func(dp string, flows bool) int { // the same dataplane with 1 rule and records on
		for i, m := range modes {
			if m.dataplane == dp && m.rules == 1 && m.flows == flows {
				return i
			}
		}
		return -1
	}
	const rounds = 5
	type series struct{ tcp, udp, rr [][]float64 } // [path][round]
	data := make([]series, len(modes))
	failed := make([][2][2]int, len(modes))
	for i := range data {
		data[i] = series{make([][]float64, len(paths)), make([][]float64, len(paths)), make([][]float64, len(paths))}
	}
	for round := 0; round < rounds; round++ {
		for i, m := range modes {
			for p, path := range paths {
				tcp, tf, err := labs[i].Fabric.ConnectLoad(ctx, "x", "client", path.dst, "TCP", time.Second)
				if err != nil {
					t.Fatalf("%s, %s: %v", m.name, path.name, err)
				}
				udp, uf, err := labs[i].Fabric.ConnectLoad(ctx, "x", "client", path.dst, "UDP", time.Second)
				if err != nil {
					t.Fatalf("%s, %s: %v", m.name, path.name, err)
				}
				data[i].tcp[p] = append(data[i].tcp[p], tcp)
				data[i].udp[p] = append(data[i].udp[p], udp)
				failed[i][p][0] += tf
				failed[i][p][1] += uf
				if m.rules <= 1 { // the flow-record comparison: established request/response
					_, rr, err := labs[i].Fabric.Load(ctx, "x", "client", path.dst, time.Second)
					if err != nil {
						t.Fatalf("%s, %s: %v", m.name, path.name, err)
					}
					data[i].rr[p] = append(data[i].rr[p], rr)
				}
			}
		}
	}
	ratios := func(a, b []float64) []float64 {
		out := make([]float64, len(a))
		for r := range a {
			out[r] = round3(a[r] / b[r])
		}
		return out
	}
	var results []connResult
	for p, path := range paths {
		for i, m := range modes {
			d := data[i]
			res := connResult{Mode: m.name, Flows: m.flows, Path: path.name, Rules: m.rules,
				TCPPerSec: median(d.tcp[p]), UDPPerSec: median(d.udp[p]), TCPFailed: failed[i][p][0], UDPFailed: failed[i][p][1],
				TCPRounds: ratios(d.tcp[p], data[0].tcp[p]), UDPRounds: ratios(d.udp[p], data[0].udp[p])}
			res.TCPRatio, res.UDPRatio = median(res.TCPRounds), median(res.UDPRounds)
			if j := one(m.dataplane, true); j >= 0 && m.dataplane != "none" {
				res.TCPRatioOne, res.UDPRatioOne = round3(median(ratios(d.tcp[p], data[j].tcp[p]))), round3(median(ratios(d.udp[p], data[j].udp[p])))
			}
			if len(d.rr[p]) > 0 {
				res.RRPerSec, res.RRRatio = median(d.rr[p]), median(ratios(d.rr[p], data[0].rr[p]))
			}
			results = append(results, res)
		}
	}
	b, _ := json.MarshalIndent(results, "", "  ")
	t.Logf("\n%s", b)
	for _, r := range results {
		if r.TCPFailed+r.UDPFailed > 0 {
			t.Errorf("%s, %s, %d rules: %d TCP and %d UDP attempts failed", r.Mode, r.Path, r.Rules, r.TCPFailed, r.UDPFailed)
		}
	}
	if err := os.WriteFile("results/connections.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Println("wrote bench/results/connections.json")
}
