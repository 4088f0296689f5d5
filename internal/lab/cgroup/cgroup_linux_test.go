package cgroup

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/netnstest"
)

func TestAcquireRelease(t *testing.T) {
	netnstest.RequireRoot(t)
	before, err := current()
	if err != nil {
		t.Fatal(err)
	}
	p1, rel1, err := Acquire()
	if err != nil {
		t.Fatal(err)
	}
	p2, rel2, err := Acquire()
	if err != nil {
		t.Fatal(err)
	}
	if p1 != p2 || !strings.HasPrefix(filepath.Base(p1), prefix) {
		t.Fatalf("paths %s, %s", p1, p2)
	}
	if err := CleanStale("x"); err != nil { // must not touch a cgroup a live process is in
		t.Fatal(err)
	}
	if _, err := os.Stat(p1); err != nil {
		t.Fatalf("CleanStale removed a cgroup in use: %v", err)
	}
	now, _ := current()
	if "/"+filepath.Base(p1) != now {
		t.Fatalf("process in %s, want %s", now, p1)
	}
	if err := rel1(); err != nil {
		t.Fatal(err)
	}
	if err := rel1(); err != nil { // releasing twice counts once
		t.Fatal(err)
	}
	if _, err := os.Stat(p1); err != nil {
		t.Fatalf("released while still held: %v", err)
	}
	if err := rel2(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p1); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left after the last release", p1)
	}
	if after, _ := current(); after != before {
		t.Errorf("process in %s after release, want %s", after, before)
	}
}

func TestCleanStale(t *testing.T) {
	netnstest.RequireRoot(t)
	mnt, err := Mount()
	if err != nil {
		t.Fatal(err)
	}
	// A pid that cannot be alive (above pid_max) stands for a daemon that died.
	dead := filepath.Join(mnt, prefix+"99999999")
	if err := os.Mkdir(dead, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(dead) })
	// With a lab's and a pod's threaded groups below it, as a daemon leaves them.
	lab, err := NewThreaded(dead, "lab-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewThreaded(lab.Path, "x_a"); err != nil {
		t.Fatal(err)
	}
	// Another lab's clean-up leaves it alone (lab "a-b" is not lab "a").
	if err := CleanStale("a-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); err != nil {
		t.Fatalf("lab a-b's clean-up removed lab a's group: %v", err)
	}
	if err := CleanStale("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("stale cgroup %s not removed", dead)
	}
}

// TestThreaded moves a thread into a pod's group and back, as a probe does, and checks that
// the kernel sees it there and that the groups go away afterwards.
func TestThreaded(t *testing.T) {
	netnstest.RequireRoot(t)
	home, release, err := Acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	lab, err := NewThreaded(home, "test-lab")
	if err != nil {
		t.Fatal(err)
	}
	pod, err := NewThreaded(lab.Path, "x_a")
	if err != nil {
		t.Fatal(err)
	}
	mnt, _ := Mount()
	where := func() string {
		b, err := os.ReadFile("/proc/thread-self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "0::"); ok {
				return filepath.Join(mnt, rest)
			}
		}
		return ""
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := pod.Enter(); err != nil {
			t.Error(err)
			return
		}
		if w := where(); w != pod.Path {
			t.Errorf("thread in %s, want %s", w, pod.Path)
		}
		if err := (&Group{Path: home}).Enter(); err != nil {
			t.Error(err)
		}
		if w := where(); w != home {
			t.Errorf("thread back in %s, want %s", w, home)
		}
	}()
	<-done
	if err := lab.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lab.Path); !os.IsNotExist(err) {
		t.Errorf("%s left behind", lab.Path)
	}
}
