// Package netnstest gives privileged tests throwaway network namespaces (uniquely named,
// deleted in t.Cleanup even when the test fails) and looks inside them (TCX attachments).
// Tests that need root skip without it, unless RAMPART_REQUIRE_PRIVILEGED=1 (set by CI, which
// runs as root) turns the skip into a failure.
package netnstest

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireRoot skips (or, under RAMPART_REQUIRE_PRIVILEGED=1, fails) unless running as root
// with the given commands available.
func RequireRoot(t testing.TB, commands ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, c := range commands {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "privileged test needs " + strings.Join(missing, ", ")
	if os.Getenv("RAMPART_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal(msg + " (RAMPART_REQUIRE_PRIVILEGED=1)")
	}
	t.Skip(msg)
}

// New creates a network namespace named "<prefix>-<pid>-<random>" with loopback up, and
// deletes it when the test ends.
func New(t testing.TB, prefix string) string {
	t.Helper()
	RequireRoot(t, "ip")
	name := fmt.Sprintf("%s-%d-%05d", prefix, os.Getpid(), rand.Intn(100000))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	Run(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// Run runs a command inside the namespace and fails the test if it fails.
func Run(t testing.TB, netns string, argv ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", netns}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(argv, " "), netns, err, out)
	}
	return string(out)
}
