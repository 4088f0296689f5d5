package iptables

import (
	"fmt"
	"math/rand"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

// packet is what the interpreter matches on: the first packet of a connection (conntrack NEW,
// a SYN for TCP) crossing the filter table's FORWARD hook.
type packet struct {
	src, dst netip.Addr
	proto    ir.Protocol
	dport    uint16
	iif, oif string
	mark     uint32
}

// interp runs the filter table of a rendered spec on packets, as the kernel would walk it: the
// rule subset Render writes, anything else fails the test.
type interp struct {
	t      *testing.T
	chains map[string][][]string
	nets   map[string][]netip.Prefix // hash:ip and hash:net sets
	ports  map[string]map[string]bool
}

func newInterp(t *testing.T, spec *Spec) *interp {
	in := &interp{t: t, chains: map[string][][]string{}, nets: map[string][]netip.Prefix{}, ports: map[string]map[string]bool{}}
	for _, c := range spec.Tables["filter"] {
		in.chains[c.Name] = [][]string{}
		for _, r := range c.Rules {
			in.chains[c.Name] = append(in.chains[c.Name], tokens(t, r))
		}
	}
	for _, s := range spec.Sets {
		if s.Type == "hash:ip,port" {
			in.ports[s.Name] = map[string]bool{}
			for _, e := range s.Entries {
				in.ports[s.Name][e] = true
			}
			continue
		}
		in.nets[s.Name] = []netip.Prefix{}
		for _, e := range s.Entries {
			if !strings.Contains(e, "/") {
				e += "/32"
			}
			in.nets[s.Name] = append(in.nets[s.Name], netip.MustParsePrefix(e))
		}
	}
	return in
}

// tokens splits a rule as a shell would (Render quotes with Go's %q).
func tokens(t *testing.T, rule string) []string {
	var out []string
	for rule = strings.TrimSpace(rule); rule != ""; rule = strings.TrimSpace(rule) {
		if rule[0] == '"' {
			q, err := strconv.QuotedPrefix(rule)
			if err != nil {
				t.Fatalf("rule %q: %v", rule, err)
			}
			s, _ := strconv.Unquote(q)
			out, rule = append(out, s), rule[len(q):]
			continue
		}
		f, rest, _ := strings.Cut(rule, " ")
		out, rule = append(out, f), rest
	}
	return out
}

// run walks chain for p and returns the verdict (ACCEPT when the chain returns: the built-in
// policy) and the NFLOG prefixes logged on the way.
func (in *interp) run(chain string, p packet) (accepted bool, logs []string) {
	type frame struct {
		chain string
		next  int
	}
	stack := []frame{{chain, 0}}
	for steps := 0; len(stack) > 0; steps++ {
		if steps > 1e6 {
			in.t.Fatalf("no verdict after a million rules: a loop?")
		}
		f := &stack[len(stack)-1]
		rules, ok := in.chains[f.chain]
		if !ok {
			in.t.Fatalf("jump to missing chain %s", f.chain)
		}
		if f.next >= len(rules) {
			stack = stack[:len(stack)-1]
			continue
		}
		rule := rules[f.next]
		f.next++
		target, args := in.match(rule, &p)
		switch target {
		case "":
		case "no match":
		case "ACCEPT":
			return true, logs
		case "DROP", "REJECT":
			return false, logs
		case "RETURN":
			stack = stack[:len(stack)-1]
		case "MARK":
			v, m := mark(in.t, args["--set-xmark"])
			p.mark = p.mark&^m ^ v
		case "NFLOG":
			logs = append(logs, args["--nflog-prefix"])
		default:
			if args["goto"] == "1" {
				stack[len(stack)-1] = frame{target, 0}
			} else {
				stack = append(stack, frame{target, 0})
			}
		}
	}
	return true, logs
}

func mark(t *testing.T, s string) (uint32, uint32) {
	v, m, _ := strings.Cut(s, "/")
	vv, err1 := strconv.ParseUint(v, 0, 32)
	mm, err2 := strconv.ParseUint(m, 0, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("mark %q", s)
	}
	return uint32(vv), uint32(mm)
}

// match evaluates a rule's matches on p: its target and the target's options, or "no match".
func (in *interp) match(rule []string, p *packet) (string, map[string]string) {
	args := map[string]string{}
	neg := false
	for i := 0; i < len(rule); i++ {
		tok := rule[i]
		if tok == "!" {
			neg = true
			continue
		}
		ok := true
		arg := func() string {
			i++
			if i >= len(rule) {
				in.t.Fatalf("rule %q: %s takes an argument", rule, tok)
			}
			return rule[i]
		}
		switch tok {
		case "-m":
			arg() // the module: its options follow
			continue
		case "-i", "-o":
			name, dev := arg(), p.iif
			if tok == "-o" {
				dev = p.oif
			}
			ok = dev == name || strings.HasSuffix(name, "+") && strings.HasPrefix(dev, strings.TrimSuffix(name, "+"))
		case "-s", "-d":
			pfx, addr := netip.MustParsePrefix(arg()), p.src
			if tok == "-d" {
				addr = p.dst
			}
			ok = pfx.Contains(addr)
		case "-p":
			ok = strings.EqualFold(arg(), p.proto.String())
		case "--dport":
			first, last, found := strings.Cut(arg(), ":")
			if !found {
				last = first
			}
			a, _ := strconv.Atoi(first)
			b, _ := strconv.Atoi(last)
			ok = int(p.dport) >= a && int(p.dport) <= b
		case "--syn":
			ok = p.proto == ir.TCP // every packet here opens a connection
		case "--ctstate":
			ok = strings.Contains(arg(), "NEW")
		case "--match-set":
			name, dirs := arg(), arg()
			ok = in.inSet(name, dirs, p)
		case "--mark":
			v, m := mark(in.t, arg())
			ok = p.mark&m == v
		case "--comment":
			arg()
		case "-j", "-g":
			target := arg()
			for i++; i+1 < len(rule); i += 2 {
				args[rule[i]] = rule[i+1]
			}
			if tok == "-g" {
				args["goto"] = "1"
			}
			return target, args
		default:
			in.t.Fatalf("rule %q: the interpreter does not know %s", rule, tok)
		}
		if ok == neg {
			return "no match", nil
		}
		neg = false
	}
	return "", nil
}

func (in *interp) inSet(name, dirs string, p *packet) bool {
	if set, ok := in.ports[name]; ok {
		if dirs != "dst,dst" {
			in.t.Fatalf("port set %s matched on %s", name, dirs)
		}
		return set[fmt.Sprintf("%s,%s:%d", p.dst, strings.ToLower(p.proto.String()), p.dport)]
	}
	prefixes, ok := in.nets[name]
	if !ok {
		in.t.Fatalf("rule matches missing set %s", name)
	}
	addr := p.src
	if dirs == "dst" {
		addr = p.dst
	}
	for _, pfx := range prefixes {
		if pfx.Contains(addr) {
			return true
		}
	}
	return false
}

// TestRenderMatchesEvaluator interprets the rendered filter table for every pair of pods (and
// external addresses) on every port and protocol of random policy sets, and checks the verdict
// and the flow events logged against the reference evaluator: the decider each event names is
// the rule that decided that side. Padded and numerous policies exercise the guard trees.
func TestRenderMatchesEvaluator(t *testing.T) {
	cases := []randpolicy.Options{
		{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3},
		{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3, Pad: 9},
		{NetworkPolicies: 30, AdminPolicies: 12, Baseline: true, ClusterPolicies: 6, Pad: 2},
		{NetworkPolicies: 80, AdminPolicies: 3, Pad: 1},
	}
	external := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("198.51.100.1")}
	for ci, opts := range cases {
		for seed := int64(1); seed <= 25; seed++ {
			y := randpolicy.Generate(rand.New(rand.NewSource(seed)), opts)
			objs, err := model.Decode(strings.NewReader(randpolicy.Cluster()+"---\n"+y), "random", model.DecodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rs, err := compile.Compile(model.FromObjects(objs))
			if err != nil {
				t.Fatal(err)
			}
			iface := func(p *ir.Pod) (string, bool) { return "v" + p.Namespace + p.Name, true }
			spec, err := Render(rs, dataplane.Node{Name: "n1", Interface: iface, FlowLogGroup: DefaultFlowGroup})
			if err != nil {
				t.Fatal(err)
			}
			in, ev, table := newInterp(t, spec), policy.New(rs), newPrefixTable(rs, nil, nil)
			type end struct {
				ip  netip.Addr
				dev string
			}
			var ends []end
			for i := range rs.Pods {
				dev, _ := iface(&rs.Pods[i])
				ends = append(ends, end{rs.Pods[i].IPs[0], dev})
			}
			for _, ip := range external {
				ends = append(ends, end{ip, "eth0"})
			}
			for _, a := range ends {
				for _, b := range ends {
					if a.ip == b.ip || a.dev == "eth0" && b.dev == "eth0" {
						continue
					}
					for _, proto := range []ir.Protocol{ir.TCP, ir.UDP, ir.SCTP} {
						for _, port := range randpolicy.Ports {
							f := policy.Flow{Src: a.ip, Dst: b.ip, Protocol: proto, Port: uint16(port)}
							got, logs := in.run(ChainPrefix+"FORWARD", packet{src: a.ip, dst: b.ip, proto: proto, dport: uint16(port), iif: a.dev, oif: b.dev})
							want := ev.Verdict(f)
							if got != want.Allowed {
								t.Fatalf("case %d seed %d: %s: iptables allowed=%v, evaluator %v (egress %s; ingress %s)\npolicies:\n%s", ci, seed, f, got, want.Allowed, want.Egress.Reason, want.Ingress.Reason, y)
							}
							checkLogs(t, fmt.Sprintf("case %d seed %d: %s", ci, seed, f), logs, want, table)
						}
					}
				}
			}
		}
	}
}

// checkLogs checks that each flow event names what decided its side, and that the sides the
// evaluator decides for a pod are logged, egress first.
func checkLogs(t *testing.T, what string, logs []string, want policy.Decision, table *prefixTable) {
	t.Helper()
	var expect []ir.Direction
	if want.Src.Pod != nil {
		expect = append(expect, ir.Egress)
	}
	if want.Egress.Allowed && want.Dst.Pod != nil {
		expect = append(expect, ir.Ingress)
	}
	if len(logs) != len(expect) {
		t.Fatalf("%s: events %q, want one per side in %v", what, logs, expect)
	}
	for i, l := range logs {
		dir, allowed, d, ok := decodePrefix(l, table)
		side := want.Egress
		if dir == ir.Ingress {
			side = want.Ingress
		}
		if !ok || dir != expect[i] || allowed != side.Allowed {
			t.Fatalf("%s: event %q, want %s allowed=%v", what, l, expect[i], side.Allowed)
		}
		switch {
		case side.DecidedBy == policy.DecidedByRule:
			if !d.Known || d.Name != side.Decider.Name || d.Namespace != side.Decider.Namespace || d.Rule != side.Rule {
				t.Fatalf("%s: event %q names %s/%s rule %d, the evaluator %s rule %d", what, l, d.Namespace, d.Name, d.Rule, side.Policy, side.Rule)
			}
		case d.Known:
			t.Fatalf("%s: event %q names a rule; the evaluator: %s", what, l, side.Reason)
		}
	}
}
