package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
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

// connPair is one comparison: a set-up measured in alternation with a reference set-up, in
// short slices (adjacent slices see the same machine: a ratio per slice pair, and the median
// over pairs, is robust to the noise of a shared 2-core machine).
type connPair struct {
	Mode      string  `json:"mode"`
	Rules     int     `json:"rules"`
	Flows     bool    `json:"flow_records"`
	Reference string  `json:"reference"`
	RefRules  int     `json:"reference_rules"`
	Path      string  `json:"path"`
	Metric    string  `json:"metric"` // tcp_connections, udp_exchanges, request_response
	PerSec    float64 `json:"per_s"`  // median of the set-up's slices
	RefPerSec float64 `json:"reference_per_s"`
	Ratio     float64 `json:"ratio"` // median over slice pairs of set-up / reference
	// Ratios are every slice pair's, for the plot; Failed counts failed connection attempts
	// of the set-up (there should be none).
	Ratios []float64 `json:"ratios"`
	Failed int       `json:"failed"`
}

// TestBenchConnections measures the new-connection rate, where rules are really consulted:
// TCP connect, request and server close, and UDP request/reply from a new socket, with no
// dataplane and under each dataplane with 1, 100, 1,000 and 10,000 rules selecting the server
// (flow records on), and each dataplane with 1 rule and flow records off. Each comparison
// (every set-up against no dataplane; N rules against 1 rule of the same dataplane; records on
// against off, also for established request/response) alternates 300 ms slices of the two
// set-ups, and the comparisons take turns slice by slice. The client's rule comes last (the
// worst case for a linear chain). Results go to bench/results/connections.json.
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
	// RAMPART_BENCH_CONN_FLOWS=1 measures only flow records on against off, with more pairs:
	// their targets (5%, 10%) are within the spread of 11 pairs.
	flowsOnly := os.Getenv("RAMPART_BENCH_CONN_FLOWS") != ""
	modes := []mode{{"no dataplane", "none", 0, false}}
	counts := []int{1, 100, 1000, 10000}
	if flowsOnly {
		modes, counts = nil, []int{1}
	}
	for _, dp := range []string{"iptables", "ebpf"} {
		for _, n := range counts {
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
	find := func(dp string, rules int, flows bool) int {
		for i, m := range modes {
			if m.dataplane == dp && m.rules == rules && m.flows == flows {
				return i
			}
		}
		t.Fatalf("no set-up %s/%d/%v", dp, rules, flows)
		return -1
	}
	type cmp struct {
		a, ref int
		rr     bool // also established request/response
	}
	var cmps []cmp
	for i := 1; i < len(modes) && !flowsOnly; i++ {
		cmps = append(cmps, cmp{i, 0, modes[i].rules == 1})
	}
	for _, dp := range []string{"iptables", "ebpf"} {
		one := find(dp, 1, true)
		for _, n := range counts[1:] {
			cmps = append(cmps, cmp{find(dp, n, true), one, false})
		}
		cmps = append(cmps, cmp{one, find(dp, 1, false), true})
	}
	slices, slice, out := 11, 300*time.Millisecond, "results/connections.json"
	if flowsOnly {
		slices, out = 41, "results/connections-flows.json"
	}
	measure := func(i int, path netip.AddrPort, metric string) (float64, int) {
		if metric == "request_response" {
			_, rr, err := labs[i].Fabric.Load(ctx, "x", "client", path, slice)
			if err != nil {
				t.Fatalf("%s: %v", modes[i].name, err)
			}
			return rr, 0
		}
		proto := map[string]string{"tcp_connections": "TCP", "udp_exchanges": "UDP"}[metric]
		n, failed, err := labs[i].Fabric.ConnectLoad(ctx, "x", "client", path, proto, slice)
		if err != nil {
			t.Fatalf("%s: %v", modes[i].name, err)
		}
		return n, failed
	}
	// Every (comparison, path, metric) is one series of slice pairs; the series take turns
	// pair by pair, so that each sees the machine's moods alike (this shared 2-core machine
	// has minutes where every set-up runs at a tenth of its rate), after one discarded round
	// that lets every set-up settle.
	type series struct {
		c              cmp
		path           int
		metric         string
		a, ref, ratios []float64
		failed         int
	}
	var all []*series
	for _, c := range cmps {
		metrics := []string{"tcp_connections", "udp_exchanges"}
		if c.rr {
			metrics = append(metrics, "request_response")
		}
		for p := range paths {
			for _, metric := range metrics {
				all = append(all, &series{c: c, path: p, metric: metric})
			}
		}
	}
	for round := -1; round < slices; round++ {
		for _, x := range all {
			r, _ := measure(x.c.ref, paths[x.path].dst, x.metric)
			v, f := measure(x.c.a, paths[x.path].dst, x.metric)
			if round < 0 {
				continue
			}
			x.failed += f
			x.a, x.ref, x.ratios = append(x.a, v), append(x.ref, r), append(x.ratios, round3(v/r))
		}
	}
	var results []connPair
	for _, x := range all {
		c := x.c
		results = append(results, connPair{Mode: modes[c.a].name, Rules: modes[c.a].rules, Flows: modes[c.a].flows,
			Reference: modes[c.ref].name, RefRules: modes[c.ref].rules, Path: paths[x.path].name, Metric: x.metric,
			PerSec: round3(median(x.a)), RefPerSec: round3(median(x.ref)), Ratio: median(x.ratios), Ratios: x.ratios, Failed: x.failed})
	}
	b, _ := json.MarshalIndent(results, "", "  ")
	for _, r := range results {
		t.Logf("%-26s %5d rules vs %-26s %5d rules  %-13s %-17s %9.0f/s  ratio %.3f", r.Mode, r.Rules, r.Reference, r.RefRules, r.Path, r.Metric, r.PerSec, r.Ratio)
		if r.Failed > 0 {
			t.Errorf("%s, %s, %d rules: %d attempts failed", r.Mode, r.Path, r.Rules, r.Failed)
		}
	}
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Println("wrote bench/" + out)
}
