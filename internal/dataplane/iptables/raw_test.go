package iptables

import (
	"context"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

func TestBlockRendering(t *testing.T) {
	for _, tc := range []struct {
		name      string
		podPrefix string
		group     uint16
		limits    []dataplane.SynLimit
		allow     []dataplane.PortProtocol
		want      []string
		not       []string
	}{
		{"pod prefix and flows", "veth", 1727, nil, nil, []string{
			"-A RAMPART-BLOCK -m set --match-set rampart-blocklist src -j RAMPART-BLOCK-DROP",
			"-A RAMPART-BLOCK -m set --match-set rampart-blocklist dst -j RAMPART-BLOCK-DROP",
			`-A RAMPART-BLOCK-DROP -i veth+ -m limit --limit 20/sec --limit-burst 40 -j NFLOG --nflog-group 1727 --nflog-prefix "DE!"`,
			`-A RAMPART-BLOCK-DROP ! -i veth+ -m limit --limit 20/sec --limit-burst 40 -j NFLOG --nflog-group 1727 --nflog-prefix "DI!"`,
			"-A RAMPART-BLOCK-DROP -j DROP\n",
			"-A RAMPART-BLOCK -m set --match-set rampart-quarantine src -j RAMPART-QUAR-OUT",
			"-A RAMPART-BLOCK -m set --match-set rampart-quarantine dst -j RAMPART-QUAR-IN",
			"-A RAMPART-QUAR-OUT -j RAMPART-QUAR-DROP\n-A RAMPART-QUAR-IN -j RAMPART-QUAR-DROP",
		}, []string{"--syn", "RETURN", "tcpmss"}},
		{"quarantine allows DNS", "v", 1727, nil, []dataplane.PortProtocol{{Protocol: ir.UDP, Port: 53}, {Protocol: ir.TCP, Port: 53}}, []string{
			"-A RAMPART-QUAR-OUT -p udp -m udp --dport 53 -j RETURN\n-A RAMPART-QUAR-IN -p udp -m udp --sport 53 -j RETURN",
			"-A RAMPART-QUAR-OUT -p tcp -m tcp --dport 53 -j RETURN",
		}, nil},
		{"SYN limits", "v", 1727, []dataplane.SynLimit{{Target: netip.MustParseAddr("10.244.1.11"), Rate: 20, Burst: 40}, {Target: netip.MustParseAddr("2001:db8::1"), Rate: 1, Burst: 1}}, nil, []string{
			"-A RAMPART-BLOCK -p tcp --syn -j RAMPART-SYNLIMIT",
			"-A RAMPART-SYNLIMIT -d 10.244.1.11/32 -m hashlimit --hashlimit-above 20/sec --hashlimit-burst 40 --hashlimit-mode srcip --hashlimit-name rl",
			`-A RAMPART-SYNLIMIT-DROP -i v+ -m limit --limit 20/sec --limit-burst 40 -j NFLOG --nflog-group 1727 --nflog-prefix "DE~"`,
			"-A RAMPART-SYNLIMIT-DROP -j DROP\nCOMMIT",
		}, []string{"2001:db8"}},
		{"no pod prefix", "", 5, nil, nil, []string{`-A RAMPART-BLOCK-DROP -m limit --limit 20/sec --limit-burst 40 -j NFLOG --nflog-group 5 --nflog-prefix "DI!"`}, []string{"DE!"}},
		{"flows off", "v", 0, nil, nil, []string{"-A RAMPART-BLOCK-DROP -j DROP"}, []string{"NFLOG"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := renderRaw(tc.podPrefix, tc.group, rawState{limits: tc.limits, allow: tc.allow})
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("unexpected %q in\n%s", n, got)
				}
			}
		})
	}

	if got := renderRaw("v", 1727, rawState{minMSS: 500}); !strings.Contains(got,
		"-A RAMPART-BLOCK -p tcp -m tcp --tcp-flags SYN SYN -m set --match-set rampart-shield dst -m tcpmss --mss 0:499 -j RAMPART-SHIELD-DROP") ||
		!strings.Contains(got, `--nflog-prefix "DI%"`) {
		t.Errorf("MSS shield:\n%s", got)
	}
	// A changed limit is a new hashlimit table: a rule naming an existing one shares it, and its
	// old rate.
	name := regexp.MustCompile(`--hashlimit-name (\S+)`)
	target := netip.MustParseAddr("10.0.1.3")
	slow := name.FindStringSubmatch(renderRaw("v", 0, rawState{limits: []dataplane.SynLimit{{Target: target, Rate: 2, Burst: 4}}}))
	fast := name.FindStringSubmatch(renderRaw("v", 0, rawState{limits: []dataplane.SynLimit{{Target: target, Rate: 1000, Burst: 2000}}}))
	if slow == nil || fast == nil || slow[1] == fast[1] || len(slow[1]) > 15 {
		t.Errorf("hashlimit tables of one target at two rates: %q and %q", slow, fast)
	}
	// The connection-limit shield's caps: in the mangle table, after conntrack; IPv6 ignored.
	conns := renderRaw("v", 1727, rawState{conns: []dataplane.ConnLimit{{Target: netip.MustParseAddr("10.0.1.3"), Max: 3}, {Target: netip.MustParseAddr("2001:db8::1"), Max: 3}}})
	for _, want := range []string{
		"*mangle\n:RAMPART-CONNLIMIT - [0:0]\n:RAMPART-CONNLIMIT-DROP - [0:0]\n",
		"-A RAMPART-CONNLIMIT -d 10.0.1.3/32 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit --connlimit-above 3 --connlimit-mask 32 --connlimit-saddr -j RAMPART-CONNLIMIT-DROP\n",
		`--nflog-prefix "DI#"`,
		"-A RAMPART-CONNLIMIT-DROP -j DROP\nCOMMIT\n",
	} {
		if !strings.Contains(conns, want) {
			t.Errorf("connection caps: no %q in\n%s", want, conns)
		}
	}
	if strings.Contains(conns, "2001:db8") {
		t.Errorf("an IPv6 cap rendered:\n%s", conns)
	}
	script := setScript("s", "hash:net", ipv4Prefixes([]netip.Prefix{netip.MustParsePrefix("10.1.2.3/8"), netip.MustParsePrefix("::ffff:192.0.2.0/120"), netip.MustParsePrefix("2001:db8::/32")}))
	want := "create s hash:net family inet maxelem 65536 -exist\nflush s\nadd s 10.0.0.0/8 -exist\nadd s 192.0.2.0/24 -exist\n"
	if script != want {
		t.Errorf("set script:\n%s\nwant\n%s", script, want)
	}
	many := make([]netip.Prefix, 100000)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	if s := setScript("s", "hash:net", ipv4Prefixes(many)); !strings.Contains(s, "maxelem 131072") {
		t.Errorf("100,000 members: %s", s[:80])
	}

	for _, p := range []struct {
		prefix string
		dir    ir.Direction
		drop   flow.DropKind
	}{{"DI!", ir.Ingress, flow.DropBlocklist}, {"DE!", ir.Egress, flow.DropBlocklist}, {"DE~", ir.Egress, flow.DropSynLimit},
		{"DI^", ir.Ingress, flow.DropQuarantine}, {"DI%", ir.Ingress, flow.DropShield}, {"DI#", ir.Ingress, flow.DropConnLimit}, {"AI!", 0, ""}, {"DIX", 0, ""}} {
		dir, drop := decodeDropPrefix(p.prefix)
		if drop != p.drop || dir != p.dir {
			t.Errorf("decodeDropPrefix(%q) = %v, %q", p.prefix, dir, drop)
		}
		if _, _, _, ok := decodePrefix(p.prefix); ok && p.drop != "" {
			t.Errorf("decodePrefix takes the drop prefix %q as a policy's", p.prefix)
		}
	}
}

type collect struct {
	mu  sync.Mutex
	evs []flow.Event
}

func (c *collect) Observe(ev flow.Event) { c.mu.Lock(); c.evs = append(c.evs, ev); c.mu.Unlock() }
func (c *collect) Lost(string, uint64)   {}

func (c *collect) blocked() []flow.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []flow.Event
	for _, ev := range c.evs {
		if ev.Drop == flow.DropBlocklist {
			out = append(out, ev)
		}
	}
	return out
}

// TestBlocklistInNetns blocks an address in a namespace of its own and checks with real
// connections: packets from a listed address are dropped in the raw table (a connect times out
// instead of being refused), a sample is logged as a blocked flow event, the policy Sync does not
// touch the blocklist, lifting the entry restores it, a new process adopts what it finds, and
// Close takes everything away.
func TestBlocklistInNetns(t *testing.T) {
	netnstest.RequireRoot(t, "iptables-restore", "ipset")
	ns := netnstest.New(t, "rt-blk")
	netnstest.Run(t, ns, "ip", "addr", "add", "192.0.2.7/32", "dev", "lo")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := allLocal(0)
	node.PodInterfacePrefix, node.FlowLogGroup = "v", DefaultFlowGroup
	dp := New(node, NetnsRunner{Netns: ns})
	t.Cleanup(func() { _ = dp.Close() })
	sink := &collect{}
	go func() { _ = dp.ReadFlows(ctx, ns, sink) }()

	// connect reports whether a TCP connect to a closed port is answered (refused) rather than
	// dropped (timed out), retried so a starved run cannot pass a drop off as an answer.
	connect := func() bool {
		for i := 0; i < 3; i++ {
			err := exec.Command("ip", "netns", "exec", ns, "timeout", "1", "bash", "-c", "echo > /dev/tcp/192.0.2.7/9").Run()
			if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
				return true
			}
		}
		return false
	}
	if err := dp.Sync(ctx, cluster(t, 3, policies)); err != nil {
		t.Fatal(err)
	}
	if !connect() {
		t.Fatal("not answered before any block")
	}
	// Nothing to block, limit, quarantine or shield on a node that never had any: no raw rules.
	for _, err := range []error{dp.SetBlocked(nil), dp.SetSynLimits(nil), dp.SetQuarantine(dataplane.Quarantine{}), dp.SetMSSShield(dataplane.MSSShield{})} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if raw := netnstest.Run(t, ns, "iptables-save", "-t", "raw"); strings.Contains(raw, "RAMPART") {
		t.Fatalf("empty responses installed raw rules:\n%s", raw)
	}
	block := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.7/32")}
	if err := dp.SetBlocked(block); err != nil {
		t.Fatal(err)
	}
	raw := netnstest.Run(t, ns, "iptables-save", "-t", "raw")
	if !strings.Contains(raw, "-A PREROUTING -m comment --comment rampart -j RAMPART-BLOCK") {
		t.Fatalf("no jump from raw PREROUTING:\n%s", raw)
	}
	if connect() {
		t.Fatal("a listed address still answered")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(sink.blocked()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	evs := sink.blocked()
	if len(evs) == 0 {
		t.Fatal("no blocked flow event")
	}
	if ev := evs[0]; ev.Tuple.Dst.Addr() != netip.MustParseAddr("192.0.2.7") || ev.Tuple.Dst.Port() != 9 || ev.Direction != ir.Ingress || ev.Allowed {
		t.Errorf("blocked event %+v", ev)
	}

	// A policy sync (a new process's too) leaves the blocklist alone.
	if err := dp.Sync(ctx, cluster(t, 4, "")); err != nil {
		t.Fatal(err)
	}
	dp2 := New(node, NetnsRunner{Netns: ns})
	if err := dp2.Sync(ctx, cluster(t, 5, policies)); err != nil {
		t.Fatalf("sync of a new process beside the blocklist: %v", err)
	}
	if connect() {
		t.Fatal("a policy sync lifted the block")
	}
	// Quarantine cuts the address too (its connections to itself, both ends), and lifting it
	// restores the blocked state.
	if err := dp.SetQuarantine(dataplane.Quarantine{Pods: []netip.Addr{netip.MustParseAddr("192.0.2.7")}, Allow: []dataplane.PortProtocol{{Protocol: ir.UDP, Port: 53}}}); err != nil {
		t.Fatal(err)
	}
	if raw := netnstest.Run(t, ns, "iptables-save", "-t", "raw"); !strings.Contains(raw, "--dport 53 -j RETURN") {
		t.Errorf("quarantine's allowed port missing:\n%s", raw)
	}
	if err := dp.SetQuarantine(dataplane.Quarantine{}); err != nil {
		t.Fatal(err)
	}
	// The new process replaces the set it finds: 192.0.2.7 is lifted.
	if err := dp2.SetBlocked(block[:1]); err != nil {
		t.Fatal(err)
	}
	if !connect() {
		t.Fatal("lifting the entry did not restore the address")
	}
	if err := dp2.SetQuarantine(dataplane.Quarantine{Pods: []netip.Addr{netip.MustParseAddr("192.0.2.7")}}); err != nil {
		t.Fatal(err)
	}
	if connect() {
		t.Fatal("a quarantined address still answered")
	}
	if err := dp2.SetQuarantine(dataplane.Quarantine{}); err != nil {
		t.Fatal(err)
	}
	if !connect() {
		t.Fatal("lifting the quarantine did not restore the address")
	}
	if sets := netnstest.Run(t, ns, "ipset", "list", "-n"); strings.Contains(sets, BlockSet+"-n") {
		t.Errorf("staged set left behind: %s", sets)
	}
	if out := netnstest.Run(t, ns, "ipset", "list", BlockSet); !strings.Contains(out, "198.51.100.0/24") || strings.Contains(out, "192.0.2.7") {
		t.Errorf("blocklist members:\n%s", out)
	}
	if err := dp2.Close(); err != nil {
		t.Fatal(err)
	}
	if s := netnstest.Run(t, ns, "iptables-save") + netnstest.Run(t, ns, "ipset", "list", "-n"); strings.Contains(s, "RAMPART") || strings.Contains(s, "rampart") {
		t.Errorf("close left state behind:\n%s", s)
	}
}
