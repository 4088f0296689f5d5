package ebpf

import (
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

func TestRangePrefixes(t *testing.T) {
	tests := []struct {
		lo, hi int
		want   string
	}{
		{0, 65535, "0/0"},
		{80, 81, "80/15"},
		{80, 80, "80/16"},
		{1, 3, "1/16 2/15"},
		{1024, 2047, "1024/6"},
	}
	for _, tc := range tests {
		var got []string
		for _, p := range rangePrefixes(tc.lo, tc.hi) {
			got = append(got, fmt.Sprintf("%d/%d", p.port, p.bits))
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("[%d,%d] = %v, want %s", tc.lo, tc.hi, got, tc.want)
		}
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		lo := r.Intn(65536)
		hi := lo + r.Intn(65536-lo)
		covered := 0
		for _, p := range rangePrefixes(lo, hi) {
			size := 1 << (16 - p.bits)
			if int(p.port) < lo || int(p.port)+size-1 > hi || int(p.port)%size != 0 {
				t.Fatalf("[%d,%d]: prefix %d/%d outside or misaligned", lo, hi, p.port, p.bits)
			}
			covered += size
		}
		if covered != hi-lo+1 {
			t.Fatalf("[%d,%d]: prefixes cover %d ports, want %d", lo, hi, covered, hi-lo+1)
		}
	}
}

// emulate looks a flow up in the tables the way the programs do: the egress table of the
// source's endpoint with the destination's identity, then the ingress table of the
// destination's endpoint with the source's identity.
type emulator struct {
	t     *Tables
	byIP  map[netip.Addr]uint32
	index map[[4]uint32][]PolicyEntry
}

func newEmulator(t *Tables, rs *ir.Ruleset) *emulator {
	e := &emulator{t: t, byIP: map[netip.Addr]uint32{}, index: map[[4]uint32][]PolicyEntry{}}
	for id, ep := range t.Endpoints {
		e.byIP[rs.Pods[id].IP()] = ep
	}
	for _, p := range t.PolicyEntries() {
		k := [4]uint32{p.Endpoint, uint32(p.Direction), uint32(p.Identity), uint32(p.Protocol)}
		e.index[k] = append(e.index[k], p)
	}
	return e
}

func (e *emulator) identity(ip netip.Addr) Identity {
	best, id := -1, Identity(0)
	for _, c := range e.t.IPCache {
		if c.Prefix.Contains(ip) && c.Prefix.Bits() > best {
			best, id = c.Prefix.Bits(), c.Identity
		}
	}
	return id
}

func (e *emulator) side(ep uint32, dir ir.Direction, remote netip.Addr, proto ir.Protocol, port uint16) (bool, error) {
	allow, _, err := e.sideRule(ep, dir, remote, proto, port)
	return allow, err
}

// sideRule also returns the rule id of the entry that decided (0: none).
func (e *emulator) sideRule(ep uint32, dir ir.Direction, remote netip.Addr, proto ir.Protocol, port uint16) (bool, uint32, error) {
	if ep == 0 || !e.t.Selected[[2]uint32{ep, uint32(dir)}] {
		return true, 0, nil
	}
	best := -1
	allow := false
	var rule uint32
	for _, p := range e.index[[4]uint32{ep, uint32(dir), uint32(e.identity(remote)), uint32(proto)}] {
		mask := uint16(0xffff) << (16 - p.PortBits)
		if p.PortBits == 0 {
			mask = 0
		}
		if port&mask == p.Port {
			if best >= 0 {
				// The pieces of the port space are disjoint: an overlap would make the LPM
				// answer depend on which piece is longer, not on the rules.
				return false, 0, fmt.Errorf("overlapping entries for endpoint %d %s %s port %d", ep, dir, proto, port)
			}
			if !p.Allow && p.Rule == 0 {
				return false, 0, fmt.Errorf("entry for endpoint %d %s %s port %d says what a missing entry says (deny, no rule)", ep, dir, proto, port)
			}
			best, allow, rule = int(p.PortBits), p.Allow, p.Rule
		}
	}
	// No entry: denied by isolation, as the programs read a missing entry.
	return allow, rule, nil
}

// checkRules compares the rule each side's entry names (what flow records report) with the
// rule the evaluator says decided; isolation and default allow name none.
func (e *emulator) checkRules(f policy.Flow, d policy.Decision) error {
	if f.Src == f.Dst {
		return nil
	}
	for _, s := range []struct {
		ep     uint32
		remote netip.Addr
		side   policy.Side
	}{{e.byIP[f.Src], f.Dst, d.Egress}, {e.byIP[f.Dst], f.Src, d.Ingress}} {
		if s.ep == 0 {
			continue
		}
		_, id, err := e.sideRule(s.ep, s.side.Direction, s.remote, f.Protocol, f.Port)
		if err != nil {
			return err
		}
		got := e.t.Rules.Decider(id)
		if s.side.DecidedBy != policy.DecidedByRule {
			if got.Known {
				return fmt.Errorf("%s: tables name %s rule %d, the evaluator no rule (%s)", s.side.Direction, got.Name, got.Rule, s.side.DecidedBy)
			}
			continue
		}
		want := s.side.Policy
		gotRef := (&ir.Policy{Tier: got.Tier, Kind: got.Kind, Namespace: got.Namespace, Name: got.Name}).Ref()
		if !got.Known || got.Rule != s.side.Rule || !strings.HasPrefix(want, strings.SplitN(gotRef, " (", 2)[0]) {
			return fmt.Errorf("%s: tables name %q rule %d, the evaluator %q rule %d", s.side.Direction, gotRef, got.Rule, want, s.side.Rule)
		}
	}
	return nil
}

func (e *emulator) allowed(f policy.Flow) (bool, error) {
	if f.Src == f.Dst {
		return true, nil
	}
	eg, err := e.side(e.byIP[f.Src], ir.Egress, f.Dst, f.Protocol, f.Port)
	if err != nil {
		return false, err
	}
	in, err := e.side(e.byIP[f.Dst], ir.Ingress, f.Src, f.Protocol, f.Port)
	return eg && in, err
}

// randomRuleset compiles the random-policy cluster with the policies generated for seed, and
// returns them as YAML for failure messages.
func randomRuleset(t *testing.T, base []model.Object, seed int64) (*ir.Ruleset, string) {
	t.Helper()
	y := randpolicy.Generate(rand.New(rand.NewSource(seed)), randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3})
	objs, err := model.Decode(strings.NewReader(y), "gen", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(append(append([]model.Object{}, base...), objs...)))
	if err != nil {
		t.Fatal(err)
	}
	return rs, y
}

// TestTablesMatchEvaluator: for random policy sets, looking flows up in the tables (as the BPF
// programs will) gives the evaluator's verdict and names the rule the evaluator names, for every pod pair, protocol and a spread of
// ports, and for addresses outside the cluster in both directions.
func TestTablesMatchEvaluator(t *testing.T) {
	base, err := model.Decode(strings.NewReader(randpolicy.Cluster()), "cluster", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for seed := int64(0); seed < 200; seed++ {
		rs, y := randomRuleset(t, base, seed)
		tables, err := Build(rs, func(*ir.Pod) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		checkTables(t, base, rs, tables, y, fmt.Sprintf("seed %d", seed))
	}
}

// checkTables compares, for every pod pair, protocol and a spread of ports, and for addresses
// outside the cluster in both directions, the verdict and rule of the tables with the
// evaluator's. y is the policy set rs was compiled from (shrunk in a failure's message).
func checkTables(t *testing.T, base []model.Object, rs *ir.Ruleset, tables *Tables, y, what string) {
	t.Helper()
	external := []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.244.1.99"), netip.MustParseAddr("10.244.2.200")}
	ports := []uint16{1, 79, 80, 81, 82, 443, 65535}
	em, ev := newEmulator(tables, rs), policy.New(rs)
	var addrs []netip.Addr
	for _, p := range rs.Pods {
		addrs = append(addrs, p.IP())
	}
	addrs = append(addrs, external...)
	for _, src := range addrs {
		for _, dst := range addrs {
			for _, proto := range ir.Protocols {
				for _, port := range ports {
					f := policy.Flow{Src: src, Dst: dst, Protocol: proto, Port: port}
					got, err := em.allowed(f)
					if err != nil {
						t.Fatalf("%s: %v: %v", what, f, err)
					}
					if want := ev.Verdict(f).Allowed; got != want {
						d := ev.Verdict(f)
						min := randpolicy.Shrink(y, func(c string) bool {
							g, w, ok := tablesVerdict(base, c, f)
							return ok && g != w
						})
						t.Fatalf("%s: %v: tables say %v, evaluator %v (egress: %s; ingress: %s); smallest policy set that disagrees:\n%s", what, f, got, want, d.Egress.Reason, d.Ingress.Reason, min)
					}
					if err := em.checkRules(f, ev.Verdict(f)); err != nil {
						t.Fatalf("%s: %v: %v\npolicies:\n%s", what, f, err, y)
					}
				}
			}
		}
	}
}

// TestBuilderFollowsChanges: one Builder given policy sets one after another (as a dataplane
// syncs them) builds tables that agree with the evaluator each time. Every set is followed by
// the same set with its policies renamed in reverse order (which reorders the compiled sets) and port 80
// moved to 79 (which changes no set): the Builder then reuses its identities, translated to the
// new set ids, and keeps every identity's number.
func TestBuilderFollowsChanges(t *testing.T) {
	base, err := model.Decode(strings.NewReader(randpolicy.Cluster()), "cluster", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b Builder
	reused := 0
	for seed := int64(0); seed < 60; seed++ {
		rs, y := randomRuleset(t, base, seed)
		tables, err := b.Build(rs, func(*ir.Pod) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		checkTables(t, base, rs, tables, y, fmt.Sprintf("seed %d", seed))

		y2 := strings.ReplaceAll(reverseNames(y), "port: 80,", "port: 79,")
		rs2, _, err := compileSet(base, y2)
		if err != nil {
			t.Fatal(err)
		}
		last := b.last
		tables2, err := b.Build(rs2, func(*ir.Pod) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := last.reuse(rs2); ok {
			reused++
			if !slices.Equal(tables.IPCache, tables2.IPCache) {
				t.Fatalf("seed %d: identities renumbered although no set changed", seed)
			}
		}
		checkTables(t, base, rs2, tables2, y2, fmt.Sprintf("seed %d, renamed and port 80 moved", seed))
	}
	if reused < 30 {
		t.Fatalf("identities reused in %d of 60 changes that left the sets as they were", reused)
	}
}

// tablesVerdict looks one flow up in tables built for policy set y on the cluster base, and
// returns their verdict and the evaluator's (ok is false when y does not compile).
func tablesVerdict(base []model.Object, y string, f policy.Flow) (got, want, ok bool) {
	rs, tables, err := compileSet(base, y)
	if err != nil {
		return false, false, false
	}
	got, err = newEmulator(tables, rs).allowed(f)
	if err != nil {
		return false, false, false
	}
	return got, policy.New(rs).Verdict(f).Allowed, true
}

// compileSet compiles policy set y on the cluster base and builds every pod's tables.
func compileSet(base []model.Object, y string) (*ir.Ruleset, *Tables, error) {
	objs, err := model.Decode(strings.NewReader(y), "policies", model.DecodeOptions{})
	if err != nil {
		return nil, nil, err
	}
	rs, err := compile.Compile(model.FromObjects(append(append([]model.Object{}, base...), objs...)))
	if err != nil {
		return nil, nil, err
	}
	tables, err := Build(rs, func(*ir.Pod) bool { return true })
	return rs, tables, err
}

// reverseNames renames the policies of a generated set so that they sort the other way round.
func reverseNames(y string) string {
	for _, kind := range []string{"np", "anp", "cnp"} {
		for i := 0; i < 5; i++ {
			y = strings.ReplaceAll(y, fmt.Sprintf("name: %s-%d,", kind, i), fmt.Sprintf("name: %s-x%d,", kind, 9-i))
		}
	}
	return y
}
