package conformance

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/policy"
)

// TestEvaluatorConformance runs every transcribed upstream case against the reference
// evaluator: each step's expectations must equal the evaluator's verdicts exactly.
func TestEvaluatorConformance(t *testing.T) {
	suites, err := Suites("cases")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, dir := range suites {
		cases, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			total++
			t.Run(filepath.Base(dir)+"/"+c.Name, func(t *testing.T) {
				cluster, err := LoadBase(dir, c)
				if err != nil {
					t.Fatal(err)
				}
				for si, step := range c.Steps {
					if err := step.ApplyTo(cluster); err != nil {
						t.Fatalf("step %d: %v", si, err)
					}
					rs, err := compile.Compile(cluster)
					if err != nil {
						t.Fatalf("step %d: compile: %v", si, err)
					}
					ev := policy.New(rs)
					pods := PodKeys(cluster)
					var wrong []string
					for _, ps := range step.Probes {
						want, err := ps.Expected(pods)
						if err != nil {
							t.Fatalf("step %d: %v", si, err)
						}
						proto, err := ir.ParseProtocol(ps.Protocol)
						if err != nil {
							t.Fatalf("step %d: %v", si, err)
						}
						for pair, allowed := range want {
							d := ev.Verdict(policy.Flow{Src: podIP(t, rs, pair.From), Dst: podIP(t, rs, pair.To), Protocol: proto, Port: uint16(pair.Port)})
							if d.Allowed != allowed {
								why := d.Ingress.Reason
								if !d.Egress.Allowed || (allowed && d.Egress.DecidedBy != policy.DecidedByRule) {
									why = d.Egress.Reason + " / " + d.Ingress.Reason
								}
								wrong = append(wrong, fmt.Sprintf("%s: got allowed=%v, upstream expects %v (%s)", pair, d.Allowed, allowed, why))
							}
						}
					}
					if len(wrong) > 0 {
						sort.Strings(wrong)
						if len(wrong) > 10 {
							wrong = append(wrong[:10], fmt.Sprintf("... and %d more", len(wrong)-10))
						}
						t.Errorf("step %d (%s):\n%s", si, step.Description, strings.Join(wrong, "\n"))
					}
				}
			})
		}
	}
	if total == 0 {
		t.Fatal("no conformance cases found")
	}
}

func podIP(t *testing.T, rs *ir.Ruleset, key string) netip.Addr {
	t.Helper()
	p := rs.PodByKey(key)
	if p == nil || len(p.IPs) == 0 {
		t.Fatalf("pod %s has no IP", key)
	}
	return p.IP()
}
