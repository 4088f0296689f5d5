package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/dataplane"
	rebpf "github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/dataplane/iptables"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/nsexec"
	"github.com/rampart-sec/rampart/internal/threat"
)

// blockSetups are the receivers of TestBenchBlocklist: each is a network namespace on the far
// end of its own veth from the sender's namespace.
//   - sink: the far end is down, so the sender's veth drops every frame: what sending alone
//     costs, subtracted from the others to leave the receiving side's cost;
//   - stack: no blocklist, frames to an address the receiver does not have, dropped by the
//     kernel's routing (the ordinary path up to the first decision);
//   - iptables: the 100,000-entry blocklist as the iptables dataplane installs it (hash:net
//     ipset, raw-table PREROUTING drop);
//   - xdp: the same list as the eBPF dataplane installs it (LPM map, XDP on the uplink).
//
// Frames arrive as they do from a NIC: the sender is an in-kernel generator (an XDP program run
// by BPF_PROG_TEST_RUN in live-frames mode, redirecting each frame into its veth), so the
// receiving veth gets XDP frames, not socket buffers, and builds a socket buffer only for what
// its XDP program passes. The stack and iptables receivers run a program that passes
// everything (a NIC driver's path with no XDP program is the same: the socket buffer is built
// after the hook).
var blockSetups = []string{"sink", "stack", "iptables", "xdp"}

// blocklistResult is one set-up's measurement in bench/results/blocklist.json.
type blocklistResult struct {
	Setup string `json:"setup"`
	// MaxRate: frames a second the sender pushed through at full speed (median of rounds),
	// every one of them dropped by the set-up.
	MaxRate float64 `json:"max_rate_pps"`
	// CPUPerPacket: CPU time (all cores, from /proc/stat) per frame at the same offered load
	// for every set-up (median of rounds), and ReceiveCPU the same less the sink's.
	CPUPerPacket float64 `json:"cpu_ns_per_packet"`
	ReceiveCPU   float64 `json:"receive_cpu_ns_per_packet"`
	// Dropped: what the set-up's own counter says it dropped in the fixed-load rounds, against
	// Sent.
	Dropped uint64 `json:"dropped"`
	Sent    uint64 `json:"sent"`
}

type blocklistReport struct {
	Entries     int                `json:"entries"`
	OfferedLoad float64            `json:"offered_load_pps"`
	Rounds      int                `json:"rounds"`
	LoadSeconds map[string]float64 `json:"load_seconds"` // feed parse, iptables and eBPF SetBlocked
	Results     []blocklistResult  `json:"results"`
	// Ratio is the iptables set-up's receive CPU per dropped packet over XDP's.
	Ratio float64 `json:"iptables_over_xdp_receive_cpu"`
}

// TestBenchBlocklist measures what a 100,000-CIDR blocklist costs per dropped packet in XDP
// against the iptables raw table, in the same run and at the same offered load: a generator in
// a namespace of its own sends UDP frames from a listed address into one veth per set-up,
// round-robin, so slow drift hits every set-up alike. veth runs the receiver's side on the
// sender's CPU, which is why a sink is measured to take the sender's own cost out. Results:
// bench/results/blocklist.json.
func TestBenchBlocklist(t *testing.T) {
	if os.Getenv("RAMPART_BENCH") == "" {
		t.Skip("set RAMPART_BENCH=1 (make bench) to run the blocklist benchmark")
	}
	netnstest.RequireRoot(t, "iptables-restore", "ipset")
	rep := blocklistReport{Entries: 100000, Rounds: 7, LoadSeconds: map[string]float64{}}

	// The feed: 100,000 entries (a third /24s, the rest /32s), with the sender's address.
	src := netip.MustParseAddr("198.18.0.1")
	dir := t.TempDir()
	var feed strings.Builder
	feed.WriteString("# generated: 100,000 entries\n" + src.String() + "\n")
	for i := 1; i < rep.Entries; i++ {
		if i%3 == 0 {
			fmt.Fprintf(&feed, "%d.%d.%d.0/24\n", 20+i>>16, (i>>8)&255, i&255)
		} else {
			fmt.Fprintf(&feed, "100.%d.%d.%d\n", 64+(i>>16), (i>>8)&255, i&255)
		}
	}
	path := filepath.Join(dir, "feed.netset")
	if err := os.WriteFile(path, []byte(feed.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	prefixes, _, err := threat.LoadFeed(&model.Feed{Name: "bench", File: path, Format: model.FormatNetset})
	if err != nil {
		t.Fatal(err)
	}
	rep.LoadSeconds["feed_parse"] = time.Since(start).Seconds()
	if len(prefixes) != rep.Entries {
		t.Fatalf("feed: %d entries, want %d", len(prefixes), rep.Entries)
	}

	sender := netnstest.New(t, "rb-blk-s")
	links := map[string]*blockLink{}
	for i, setup := range blockSetups {
		ns := netnstest.New(t, "rb-blk-"+setup)
		links[setup] = newBlockLink(t, sender, ns, i, src)
	}
	// stack: frames go to an address the receiver does not have (forwarding is off).
	links["stack"].dst = netip.MustParseAddr("198.19.9.9")
	netnstest.Run(t, links["sink"].ns, "ip", "link", "set", "up0", "down")
	passAll(t, links["stack"].ns)
	passAll(t, links["iptables"].ns)

	ipt := iptables.New(dataplane.Node{Name: "bench"}, iptables.NetnsRunner{Netns: links["iptables"].ns})
	t.Cleanup(func() { _ = ipt.Close() })
	start = time.Now()
	if err := ipt.SetBlocked(prefixes); err != nil {
		t.Fatal(err)
	}
	rep.LoadSeconds["iptables_set_blocked"] = time.Since(start).Seconds()

	xdp := rebpf.New(dataplane.Node{Name: "bench", Uplink: "up0", Interface: func(*ir.Pod) (string, bool) { return "", false }}, links["xdp"].ns)
	t.Cleanup(func() { _ = xdp.Close() })
	if err := xdp.Sync(context.Background(), &ir.Ruleset{}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := xdp.SetBlocked(prefixes); err != nil {
		t.Fatal(err)
	}
	rep.LoadSeconds["ebpf_set_blocked"] = time.Since(start).Seconds()

	dropped := map[string]func() uint64{
		"sink":  func() uint64 { return 0 },
		"stack": func() uint64 { return rxPackets(t, links["stack"].ns) },
		"iptables": func() uint64 {
			out := netnstest.Run(t, links["iptables"].ns, "iptables", "-t", "raw", "-nvxL", "RAMPART-BLOCK-DROP")
			m := regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+DROP`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no DROP counter in\n%s", out)
			}
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return n
		},
		"xdp": func() uint64 {
			c, err := xdp.Counters()
			if err != nil {
				t.Fatal(err)
			}
			return c["xdp_drop_blocked"]
		},
	}

	// Full speed, round-robin: the drop rate each set-up sustains.
	maxRates := map[string][]float64{}
	for r := 0; r < rep.Rounds; r++ {
		for _, s := range blockSetups {
			sent, _, took := links[s].send(t, time.Second, 0)
			maxRates[s] = append(maxRates[s], float64(sent)/took.Seconds())
		}
	}
	slowest := math.Inf(1)
	for _, s := range blockSetups[1:] {
		slowest = min(slowest, median(maxRates[s]))
	}
	// The same offered load for all: 60% of what the slowest receiver sustains.
	rep.OfferedLoad = math.Round(0.6 * slowest)
	cpu := map[string][]float64{}
	sentAt := map[string]uint64{}
	droppedAt := map[string]uint64{}
	for _, s := range blockSetups {
		droppedAt[s] = dropped[s]()
	}
	for r := 0; r < rep.Rounds; r++ {
		for _, s := range blockSetups {
			sent, busy, _ := links[s].send(t, 2*time.Second, rep.OfferedLoad)
			sentAt[s] += sent
			cpu[s] = append(cpu[s], float64(busy.Nanoseconds())/float64(sent))
		}
	}
	sink := median(cpu["sink"])
	for _, s := range blockSetups {
		res := blocklistResult{Setup: s, MaxRate: median(maxRates[s]), CPUPerPacket: median(cpu[s]), Sent: sentAt[s],
			Dropped: dropped[s]() - droppedAt[s]}
		res.ReceiveCPU = res.CPUPerPacket - sink
		rep.Results = append(rep.Results, res)
		t.Logf("%-8s max %8.0f pps, %6.0f ns CPU per packet at %.0f pps (%6.0f receiving), dropped %d of %d",
			s, res.MaxRate, res.CPUPerPacket, rep.OfferedLoad, res.ReceiveCPU, res.Dropped, res.Sent)
		if s != "sink" && float64(res.Dropped) < 0.95*float64(res.Sent) {
			t.Errorf("%s dropped %d of %d frames: the set-up is not what is measured", s, res.Dropped, res.Sent)
		}
	}
	byName := map[string]blocklistResult{}
	for _, r := range rep.Results {
		byName[r.Setup] = r
	}
	rep.Ratio = byName["iptables"].ReceiveCPU / byName["xdp"].ReceiveCPU
	t.Logf("iptables over XDP, receive CPU per dropped packet: %.2f; load: %v", rep.Ratio, rep.LoadSeconds)
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile("results/blocklist.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// blockLink is one veth from the sender's namespace (down<i>) to a receiver's (up0), and a
// packet socket on the sender's end.
type blockLink struct {
	ns, sender string
	gen        *ebpf.Program // redirects every frame into the link
	src, dst   netip.Addr
	frame      []byte
}

func newBlockLink(t *testing.T, sender, ns string, i int, src netip.Addr) *blockLink {
	t.Helper()
	down := fmt.Sprintf("down%d", i)
	netnstest.Run(t, sender, "ip", "link", "add", down, "type", "veth", "peer", "name", "up0", "netns", ns)
	netnstest.Run(t, sender, "ip", "link", "set", down, "up")
	dst := netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 2})
	netnstest.Run(t, ns, "ip", "addr", "add", dst.String()+"/24", "dev", "up0")
	netnstest.Run(t, ns, "ip", "link", "set", "up0", "up")
	l := &blockLink{ns: ns, sender: sender, src: src, dst: dst}
	var mac net.HardwareAddr
	err := nsexec.Do(ns, func() error {
		ifc, err := net.InterfaceByName("up0")
		if err == nil {
			mac = ifc.HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = nsexec.Do(sender, func() error {
		ifc, err := net.InterfaceByName(down)
		if err != nil {
			return err
		}
		l.frame = udpFrame(ifc.HardwareAddr, mac)
		l.gen, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, int32(ifc.Index)), asm.Mov.Imm(asm.R2, 0), asm.FnRedirect.Call(), asm.Return()}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.gen.Close() })
	return l
}

// passAll attaches a program that passes every frame to the receiver's veth (without an XDP
// program a veth refuses redirected frames).
func passAll(t *testing.T, ns string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	var l link.Link
	err = nsexec.Do(ns, func() error {
		ifc, err := net.InterfaceByName("up0")
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); prog.Close() })
}

// udpFrame is an Ethernet/IPv4/UDP frame with 18 bytes of payload; addresses are set per send.
func udpFrame(srcMAC, dstMAC net.HardwareAddr) []byte {
	b := make([]byte, 14+20+8+18)
	copy(b[0:], dstMAC)
	copy(b[6:], srcMAC)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)-14))
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], 9)
	binary.BigEndian.PutUint16(ip[24:], 8+18)
	return b
}

func (l *blockLink) setAddrs() {
	ip := l.frame[14:]
	s, d := l.src.As4(), l.dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
}

// liveFrames is BPF_F_TEST_XDP_LIVE_FRAMES: the test run sends what the program redirects.
const liveFrames = 1 << 1

// send generates frames for d: at full speed (pps 0) or paced at pps on average, in chunks
// sent at full speed (each test run sets up and tears down its frame pool, which takes far
// longer than sending a few thousand frames). It returns the frames sent, the CPU time all
// cores were busy meanwhile (/proc/stat, sampled at each tick: seconds of it make a fair
// figure), and how long it took.
func (l *blockLink) send(t *testing.T, d time.Duration, pps float64) (uint64, time.Duration, time.Duration) {
	t.Helper()
	l.setAddrs()
	const chunk = 65536
	var sent uint64
	var busy, took time.Duration
	err := nsexec.Do(l.sender, func() error {
		busy0 := busyTime(t)
		start := time.Now()
		for {
			now := time.Now()
			if now.Sub(start) >= d {
				break
			}
			if pps > 0 {
				if due := start.Add(time.Duration(float64(sent) / pps * float64(time.Second))); due.After(now) {
					time.Sleep(due.Sub(now))
				}
			}
			if _, err := l.gen.Run(&ebpf.RunOptions{Data: l.frame, Repeat: chunk, Flags: liveFrames}); err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			sent += uint64(chunk)
		}
		took = time.Since(start)
		busy = busyTime(t) - busy0
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sent, busy, took
}

// busyTime is the CPU time all cores have spent not idle since boot (/proc/stat).
func busyTime(t *testing.T) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
	var busy uint64
	for i, v := range f {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// rxPackets is what the receiver's veth received.
func rxPackets(t *testing.T, ns string) uint64 {
	b := netnstest.Run(t, ns, "cat", "/sys/class/net/up0/statistics/rx_packets")
	n, _ := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
	return n
}
