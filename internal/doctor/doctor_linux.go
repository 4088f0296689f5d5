// Package doctor reports what a node's kernel and system offer the dataplanes (BPF, BTF, TCX or
// clsact, XDP, cgroup v2, bpffs, iptables and its backend, ipset, conntrack) and which dataplane
// features will work, in the spirit of `calicoctl node checksystem`. Attachment probes run in a
// throwaway anonymous network namespace, so nothing is left anywhere.
package doctor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/lab/cgroup"
)

// Options say where the agent would work.
type Options struct {
	// PinDir is where eBPF state would be pinned (must be on a bpffs).
	PinDir string
}

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Feature says whether a dataplane feature works here, and what it needs otherwise.
type Feature struct {
	Dataplane dataplane.Kind `json:"dataplane"`
	Name      string         `json:"feature"`
	OK        bool           `json:"ok"`
	Needs     string         `json:"needs,omitempty"`
}

// Report is the whole finding.
type Report struct {
	Kernel   string    `json:"kernel"`
	Checks   []Check   `json:"checks"`
	Features []Feature `json:"features"`
	// Auto is what --dataplane auto picks.
	Auto dataplane.Kind `json:"auto"`
}

// Run inspects the system.
func Run(opts Options) Report {
	var r Report
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		r.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	has := map[string]bool{}
	add := func(name string, err error, ok string) {
		c := Check{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			c.Detail = err.Error()
		}
		has[name] = c.OK
		r.Checks = append(r.Checks, c)
	}
	add("bpf", probeBPF(), "programs and maps load")
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	add("btf", err, "/sys/kernel/btf/vmlinux")
	tcx, clsact, xdp := probeAttach()
	add("tcx", tcx, "TCX links attach (Linux 6.6+)")
	add("clsact", clsact, "BPF filters on a clsact qdisc attach")
	add("xdp", xdp, "XDP programs attach")
	mnt, err := cgroup.Mount()
	add("cgroup2", err, "cgroup2 mounted at "+mnt+cgroupKind(mnt))
	add("bpffs", bpffs(opts.PinDir), "bpffs at "+opts.PinDir)
	backend, err := iptablesBackend()
	add("iptables", err, backend)
	_, err = exec.LookPath("iptables-restore")
	add("iptables-restore", err, "found")
	add("ipset", runs("ipset", "version"), "ipset runs")
	add("conntrack", conntrack(), "netfilter conntrack present")

	ebpfCore := has["bpf"] && (has["tcx"] || has["clsact"])
	feat := func(kind dataplane.Kind, name string, ok bool, needs string) {
		f := Feature{Dataplane: kind, Name: name, OK: ok}
		if !ok {
			f.Needs = needs
		}
		r.Features = append(r.Features, f)
	}
	feat(dataplane.KindEBPF, "policy", ebpfCore, "BPF and TCX or clsact")
	feat(dataplane.KindEBPF, "restart without a gap (pinning)", ebpfCore && has["bpffs"], "a bpffs at "+opts.PinDir)
	feat(dataplane.KindEBPF, "connect-time Services", ebpfCore && has["cgroup2"], "a cgroup2 hierarchy (unified or hybrid)")
	feat(dataplane.KindEBPF, "early drop (XDP)", has["xdp"], "XDP")
	ipt := has["iptables"] && has["iptables-restore"] && has["ipset"]
	feat(dataplane.KindIPTables, "policy", ipt, "iptables, iptables-restore and ipset")
	feat(dataplane.KindIPTables, "sweeping denied connections", ipt && has["conntrack"], "netfilter conntrack")
	switch {
	case ebpfCore && has["bpffs"]:
		r.Auto = dataplane.KindEBPF
	case ipt:
		r.Auto = dataplane.KindIPTables
	}
	return r
}

// Pick resolves auto, and checks that an explicit choice can work here.
func Pick(kind dataplane.Kind, opts Options) (dataplane.Kind, error) {
	if kind == dataplane.KindNone {
		return kind, nil
	}
	r := Run(opts)
	if kind == dataplane.KindAuto {
		if r.Auto == "" {
			return "", fmt.Errorf("--dataplane auto: neither dataplane works on this node:\n%s", r.missing(""))
		}
		return r.Auto, nil
	}
	for _, f := range r.Features {
		if f.Dataplane == kind && (f.Name == "policy" || kind == dataplane.KindEBPF && f.Name == "restart without a gap (pinning)") && !f.OK {
			return "", fmt.Errorf("--dataplane %s cannot work on this node: %s needs %s (run rampart doctor)", kind, f.Name, f.Needs)
		}
	}
	return kind, nil
}

func (r Report) missing(kind dataplane.Kind) string {
	var b strings.Builder
	for _, f := range r.Features {
		if !f.OK && (kind == "" || f.Dataplane == kind) {
			fmt.Fprintf(&b, "  %s %s: needs %s\n", f.Dataplane, f.Name, f.Needs)
		}
	}
	return b.String()
}

func cgroupKind(mnt string) string {
	if mnt == "/sys/fs/cgroup" {
		return " (unified)"
	}
	if mnt != "" {
		return " (hybrid: v1 controllers beside it)"
	}
	return ""
}

func trivialProgram(t ebpf.ProgramType) (*ebpf.Program, error) {
	ret := int64(0)
	if t == ebpf.XDP {
		ret = 2 // XDP_PASS
	}
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: t, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, int32(ret)), asm.Return()}})
}

func probeBPF() error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create a map: %w", err)
	}
	m.Close()
	p, err := trivialProgram(ebpf.SchedCLS)
	if err != nil {
		return fmt.Errorf("load a program: %w", err)
	}
	p.Close()
	return nil
}

// probeAttach attaches trivial programs to the loopback of a fresh anonymous network
// namespace, on a thread that is discarded afterwards.
func probeAttach() (tcx, clsact, xdp error) {
	type res struct{ tcx, clsact, xdp error }
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the namespace
		var r res
		defer func() { ch <- r }()
		ns, err := netns.New()
		if err != nil {
			r.tcx, r.clsact, r.xdp = err, err, err
			return
		}
		defer ns.Close()
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			r.tcx, r.clsact, r.xdp = err, err, err
			return
		}
		idx := lo.Attrs().Index
		cls, err := trivialProgram(ebpf.SchedCLS)
		if err != nil {
			r.tcx, r.clsact = err, err
		} else {
			defer cls.Close()
			if l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: cls, Attach: ebpf.AttachTCXIngress}); err != nil {
				r.tcx = err
			} else {
				l.Close()
			}
			qd := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
			if err := netlink.QdiscAdd(qd); err != nil {
				r.clsact = fmt.Errorf("clsact qdisc: %w", err)
			} else {
				f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Protocol: unix.ETH_P_ALL, Priority: 1}, Fd: cls.FD(), Name: "probe", DirectAction: true}
				if err := netlink.FilterAdd(f); err != nil {
					r.clsact = fmt.Errorf("BPF filter: %w", err)
				}
			}
		}
		x, err := trivialProgram(ebpf.XDP)
		if err != nil {
			r.xdp = err
			return
		}
		defer x.Close()
		if l, err := link.AttachXDP(link.XDPOptions{Interface: idx, Program: x, Flags: link.XDPGenericMode}); err != nil {
			r.xdp = err
		} else {
			l.Close()
		}
	}()
	r := <-ch
	return r.tcx, r.clsact, r.xdp
}

func bpffs(dir string) error {
	if dir == "" {
		return errors.New("no pin directory given")
	}
	// The directory may not exist yet: its nearest existing parent must be on a bpffs.
	for d := dir; ; d = filepath.Dir(d) {
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err == nil {
			if st.Type == unix.BPF_FS_MAGIC {
				return nil
			}
			return fmt.Errorf("%s is not on a bpffs (mount -t bpf bpf %s)", dir, d)
		}
		if d == "/" || d == "." {
			return fmt.Errorf("%s: no such directory", dir)
		}
	}
}

func iptablesBackend() (string, error) {
	out, err := exec.Command("iptables", "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("iptables: %w", err)
	}
	s := strings.TrimSpace(string(out))
	switch {
	case strings.Contains(s, "nf_tables"):
		return s + " (backend nft)", nil
	case strings.Contains(s, "legacy"):
		return s + " (backend legacy)", nil
	}
	return s, nil
}

func runs(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// conntrack checks for netfilter conntrack: the table is per namespace, the module global,
// and its sysctl shows it.
func conntrack() error {
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_max"); err != nil {
		return errors.New("no netfilter conntrack (nf_conntrack not loaded)")
	}
	return nil
}
