package doctor

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

func TestPick(t *testing.T) {
	netnstest.RequireRoot(t, "iptables", "ipset")
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })
	plain := t.TempDir()

	r := Run(Options{PinDir: bpffs + "/rampart"})
	checks := map[string]bool{}
	for _, c := range r.Checks {
		checks[c.Name] = c.OK
	}
	// This project's machines (Linux 6.x, root) have all of these.
	for _, name := range []string{"bpf", "tcx", "clsact", "bpffs", "iptables", "ipset"} {
		if !checks[name] {
			t.Errorf("check %s failed: %+v", name, r.Checks)
		}
	}
	for _, tc := range []struct {
		name    string
		kind    dataplane.Kind
		pinDir  string
		want    dataplane.Kind
		wantErr string
	}{
		{"auto with a bpffs picks eBPF", dataplane.KindAuto, bpffs + "/x", dataplane.KindEBPF, ""},
		{"auto without a bpffs picks iptables", dataplane.KindAuto, plain, dataplane.KindIPTables, ""},
		{"explicit iptables", dataplane.KindIPTables, plain, dataplane.KindIPTables, ""},
		{"explicit eBPF without a bpffs fails clearly", dataplane.KindEBPF, plain, "", "is not on a bpffs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Pick(tc.kind, Options{PinDir: tc.pinDir})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), "bpffs") {
					t.Fatalf("Pick = %s, %v; want an error about the bpffs", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Pick = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}
