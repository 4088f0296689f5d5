package iptables

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/netnstest"
)

func TestApplyInNetns(t *testing.T) {
	netnstest.RequireRoot(t, "iptables-restore", "ipset")
	ns := netnstest.New(t, "rt-ipt")
	ctx := context.Background()
	dp := New(allLocal(0), NetnsRunner{Netns: ns})
	t.Cleanup(func() { _ = dp.Close() })

	// iptables-save stamps "# Generated/Completed on <time>" lines: drop them,
	// or a run that straddles a second boundary reports a change.
	save := func() string {
		var b strings.Builder
		for _, l := range strings.SplitAfter(netnstest.Run(t, ns, "iptables-save"), "\n") {
			if !strings.HasPrefix(l, "#") {
				b.WriteString(l)
			}
		}
		return b.String() + netnstest.Run(t, ns, "ipset", "list")
	}
	if err := dp.Sync(ctx, cluster(t, 6, policies)); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	first := save()
	for _, want := range []string{"-A FORWARD -m comment --comment rampart -j RAMPART-FORWARD", "RAMPART-P-", "Name: rampart-n", "10.0.0.3,tcp:8002"} {
		if !strings.Contains(first, want) {
			t.Errorf("after sync, state lacks %q", want)
		}
	}

	// More pods: set members change, chain rules for existing pods do not.
	if err := dp.Sync(ctx, cluster(t, 9, policies)); err != nil {
		t.Fatalf("second sync: %v", err)
	}
	second := save()
	if !strings.Contains(second, "10.0.0.9") || strings.Count(second, "-j RAMPART-FORWARD") != 1 {
		t.Errorf("second sync: new pod missing from sets, or jump duplicated:\n%s", second)
	}

	// A spec the kernel rejects must leave everything as it was.
	bad, err := Render(cluster(t, 9, ""), allLocal(0))
	if err != nil {
		t.Fatal(err)
	}
	bad.Tables["filter"] = append(bad.Tables["filter"], Chain{Name: ChainPrefix + "BAD", Rules: []string{"-m nosuchmatch -j ACCEPT"}})
	if err := dp.Apply(ctx, bad); err == nil {
		t.Fatal("applying an invalid spec succeeded")
	}
	if after := save(); after != second {
		t.Errorf("failed apply changed the state:\n--- before\n%s\n--- after\n%s", second, after)
	}

	// Dropping all policy removes policy chains and sets, keeps the hooks.
	if err := dp.Sync(ctx, cluster(t, 9, "")); err != nil {
		t.Fatalf("sync without policy: %v", err)
	}
	if s := save(); strings.Contains(s, "RAMPART-P-") || strings.Contains(s, "Name: rampart-") {
		t.Errorf("stale policy chains or sets remain:\n%s", s)
	}

	if err := dp.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if s := save(); strings.Contains(s, "RAMPART") || strings.Contains(s, "rampart") {
		t.Errorf("close left state behind:\n%s", s)
	}
}

// TestApplyLargeSet: a set with more members than ipset's default maxelem (65,536; a set of
// every pod of a 150,000-pod cluster) is created, and grows past it when swapped in.
func TestApplyLargeSet(t *testing.T) {
	netnstest.RequireRoot(t, "iptables-restore", "ipset")
	ns := netnstest.New(t, "rt-big")
	ctx := context.Background()
	dp := New(allLocal(0), NetnsRunner{Netns: ns})
	t.Cleanup(func() { _ = dp.Close() })
	set := func(n int) *Spec {
		s := IPSet{Name: "rampart-big", Type: "hash:ip", Family: "inet"}
		for i := 0; i < n; i++ {
			s.Entries = append(s.Entries, fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256))
		}
		return &Spec{Sets: []IPSet{s}, Tables: map[string][]Chain{}}
	}
	for _, n := range []int{1000, 70000, 140000} {
		if err := dp.Apply(ctx, set(n)); err != nil {
			t.Fatalf("%d members: %v", n, err)
		}
		out := netnstest.Run(t, ns, "ipset", "list", "-t", "rampart-big")
		if want := fmt.Sprintf("Number of entries: %d", n); !strings.Contains(out, want) {
			t.Fatalf("%d members: %s", n, out)
		}
	}
}
