package fabric

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/rampart-sec/rampart/internal/nsexec"
)

const netnsDir = "/run/netns"

func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// addNetns creates a named network namespace (as `ip netns add` does) with loopback up and
// forwarding-friendly sysctls.
func addNetns(name string, forward bool) error {
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	args := []string{"ip", "netns", "exec", name, "sysctl", "-q", "-w",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
	if forward {
		// Nodes: forwarding, and no per-host limit on ICMP errors (1/s by default): the lab's
		// probes come from few clients in quick succession, and a refusal (port unreachable)
		// held back by the limit would look like a drop.
		args = append(args, "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0")
	}
	if err := run(args...); err != nil {
		return err
	}
	h, err := handle(name)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo)
}

func delNetns(name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); os.IsNotExist(err) {
		return nil
	}
	err := run("ip", "netns", "del", name)
	if _, serr := os.Stat(netnsDir + "/" + name); err != nil && os.IsNotExist(serr) {
		return nil // removed meanwhile (by the lab's daemon while `lab down` sweeps)
	}
	return err
}

// listNetns returns the named namespaces starting with prefix.
func listNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// handle returns a netlink handle working inside the named namespace.
func handle(name string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

// inNetns runs fn inside the named namespace.
func inNetns(name string, fn func() error) error { return nsexec.Do(name, fn) }
