package conformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
)

// dataplanes under test: RAMPART_CONFORMANCE_DATAPLANES (comma-separated), default both.
func dataplanes() []string {
	if v := os.Getenv("RAMPART_CONFORMANCE_DATAPLANES"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"iptables", "ebpf"}
}

// combos are the dataplane/node-count pairs to run: RAMPART_CONFORMANCE_COMBOS (for example
// "iptables/1,ebpf/2"), default every dataplane on 1 and 2 nodes.
func combos() map[string]bool {
	v := os.Getenv("RAMPART_CONFORMANCE_COMBOS")
	if v == "" {
		return nil
	}
	out := map[string]bool{}
	for _, c := range strings.Split(v, ",") {
		out[strings.TrimSpace(c)] = true
	}
	return out
}

// TestLabConformance runs every transcribed upstream case in a real lab, on 1 and 2 nodes,
// driving it only through the lab's apply/delete/label/probe operations, and compares what the
// kernel lets through with the upstream expectations.
func TestLabConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("lab conformance takes minutes")
	}
	suites, err := Suites("cases")
	if err != nil {
		t.Fatal(err)
	}
	only := combos()
	for _, dp := range dataplanes() {
		for _, nodes := range []int{1, 2} {
			if only != nil && !only[fmt.Sprintf("%s/%d", dp, nodes)] {
				continue
			}
			for _, dir := range suites {
				cases, err := Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				if len(cases) == 0 {
					continue
				}
				t.Run(fmt.Sprintf("%s/%d-nodes/%s", dp, nodes, filepath.Base(dir)), func(t *testing.T) {
					runSuiteInLab(t, dir, cases, dp, nodes)
				})
			}
		}
	}
}

func runSuiteInLab(t *testing.T, dir string, cases []Case, dp string, nodes int) {
	base, err := os.ReadFile(filepath.Join(dir, cases[0].Base))
	if err != nil {
		t.Fatal(err)
	}
	l := labtest.New(t, nodes, dp, string(base))
	ctx := context.Background()
	for _, c := range cases {
		if c.Base != cases[0].Base {
			t.Fatalf("case %s: suites with several bases are not supported", c.Name)
		}
		t.Run(c.Name, func(t *testing.T) {
			// Reset: no policies, base labels.
			if err := l.Delete(ctx, controller.DeleteRequest{AllPolicies: true}); err != nil && !strings.Contains(err.Error(), "nothing to delete") {
				t.Fatal(err)
			}
			if err := l.Apply(ctx, string(base)); err != nil {
				t.Fatal(err)
			}
			for si, step := range c.Steps {
				if err := applyStep(ctx, l, step); err != nil {
					t.Fatalf("step %d: %v", si, err)
				}
				checkProbes(t, ctx, l, si, step)
			}
		})
	}
}

func applyStep(ctx context.Context, l labtest.Lab, s Step) error {
	if strings.TrimSpace(s.Apply) != "" {
		if err := l.Apply(ctx, s.Apply); err != nil {
			return err
		}
	}
	for _, d := range s.Delete {
		kind, ref, _ := strings.Cut(strings.TrimSpace(d), " ")
		if err := l.Delete(ctx, controller.DeleteRequest{Kind: kind, Ref: strings.TrimSpace(ref)}); err != nil {
			return err
		}
	}
	for _, lc := range s.Label {
		if err := l.Label(ctx, controller.LabelRequest{Kind: lc.Kind, Name: lc.Name, Set: lc.Set, Remove: lc.Remove}); err != nil {
			return err
		}
	}
	return nil
}

func checkProbes(t *testing.T, ctx context.Context, l labtest.Lab, si int, s Step) {
	t.Helper()
	c, _ := l.Snapshot()
	pods := PodKeys(c)
	var wrong []string
	for _, ps := range s.Probes {
		want, err := ps.Expected(pods)
		if err != nil {
			t.Fatalf("step %d: %v", si, err)
		}
		var got []controller.Probe
		if ps.Default != nil { // a whole truth table: probe every pair at once
			got, err = l.Probe(ctx, controller.ProbeRequest{Port: uint16(ps.Port), Protocol: ps.Protocol, Via: "service", Timeout: 600 * time.Millisecond})
			if err != nil {
				t.Fatalf("step %d: probe: %v", si, err)
			}
		}
		if ps.Default == nil { // single connections: probe just those, in parallel
			results := make([][]controller.Probe, len(ps.Expect))
			errs := make([]error, len(ps.Expect))
			var wg sync.WaitGroup
			for i, e := range ps.Expect {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i], errs[i] = l.Probe(ctx, controller.ProbeRequest{From: e.From, To: e.To, Port: uint16(ps.Port), Protocol: ps.Protocol, Via: "service", Timeout: 600 * time.Millisecond})
				}()
			}
			wg.Wait()
			for i := range results {
				if errs[i] != nil {
					t.Fatalf("step %d: probe: %v", si, errs[i])
				}
				got = append(got, results[i]...)
			}
		}
		have := map[Pair]controller.Probe{}
		for _, p := range got {
			have[Pair{p.From, p.To, int32(p.Port), p.Protocol}] = p
		}
		for pair, allowed := range want {
			p, ok := have[pair]
			if !ok {
				wrong = append(wrong, fmt.Sprintf("%s: not probed", pair))
			} else if p.Connected != allowed {
				wrong = append(wrong, fmt.Sprintf("%s via %s: connected=%v, upstream expects %v", pair, p.Target, p.Connected, allowed))
			}
		}
	}
	if len(wrong) > 0 {
		sort.Strings(wrong)
		if len(wrong) > 12 {
			wrong = append(wrong[:12], fmt.Sprintf("... and %d more", len(wrong)-12))
		}
		t.Errorf("step %d (%s):\n%s", si, s.Description, strings.Join(wrong, "\n"))
	}
}
