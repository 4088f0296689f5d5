// Package cgroup gives the lab's process a cgroup (v2) of its own, and each lab and each of its
// pods a threaded cgroup below it, where the eBPF dataplane's connect-time load balancer hooks
// the sockets of the lab's pods. The process moves into "rampart-lab-<pid>" under the cgroup2
// mount when the first lab asks, and back to where it was when the last lab releases it; the
// directory is then removed. A pod's probes run on a thread moved into the pod's cgroup for the
// duration (a socket belongs to the cgroup of the thread that creates it), so the programs
// attached to a lab's cgroup see exactly that lab's pods' sockets.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const prefix = "rampart-lab-"

var (
	mu       sync.Mutex
	refs     int
	path     string // the process's lab cgroup while refs > 0
	original string // where the process was
)

// Acquire moves the process into its lab cgroup (once) and returns the cgroup's path; call
// release when done.
func Acquire() (string, func() error, error) {
	mu.Lock()
	defer mu.Unlock()
	if refs == 0 {
		mnt, err := Mount()
		if err != nil {
			return "", nil, err
		}
		orig, err := current()
		if err != nil {
			return "", nil, err
		}
		p := filepath.Join(mnt, fmt.Sprintf("%s%d", prefix, os.Getpid()))
		// Another lab's CleanStale may remove the directory while it is still empty: retry.
		for try := 0; ; try++ {
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return "", nil, fmt.Errorf("create cgroup: %w", err)
			}
			err := movePID(p)
			if err == nil {
				break
			}
			if !errors.Is(err, os.ErrNotExist) || try == 2 {
				os.Remove(p)
				return "", nil, fmt.Errorf("join cgroup %s: %w", p, err)
			}
		}
		path, original = p, filepath.Join(mnt, orig)
	}
	refs++
	var once sync.Once
	release := func() error {
		var err error
		once.Do(func() { err = releaseOne() })
		return err
	}
	return path, release, nil
}

func releaseOne() error {
	mu.Lock()
	defer mu.Unlock()
	refs--
	if refs > 0 {
		return nil
	}
	err := movePID(original)
	if err == nil {
		err = removeTree(path)
	}
	path = ""
	return err
}

func movePID(cg string) error {
	return os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

// Group is a threaded cgroup below the process's lab cgroup: a lab's, or a pod's below it.
type Group struct {
	Path string
}

// NewThreaded creates (or reuses) the threaded cgroup name below parent.
func NewThreaded(parent, name string) (*Group, error) {
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(p, "cgroup.type"), []byte("threaded"), 0o644); err != nil {
		os.Remove(p)
		return nil, fmt.Errorf("make cgroup %s threaded: %w", p, err)
	}
	return &Group{Path: p}, nil
}

// Enter moves the calling OS thread into the group; the caller has locked its goroutine to the
// thread (runtime.LockOSThread) and moves it back (Enter on the parent) or lets it die.
func (g *Group) Enter() error {
	return os.WriteFile(filepath.Join(g.Path, "cgroup.threads"), []byte(strconv.Itoa(unix.Gettid())), 0o644)
}

// Remove deletes the group and the groups below it. A group still holding a thread is busy.
func (g *Group) Remove() error { return removeTree(g.Path) }

// removeTree removes a cgroup directory, its child groups first (cgroupfs removes a group's
// interface files with it; only child directories must go first).
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, removeTree(filepath.Join(dir, e.Name())))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Mount returns where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or
// /sys/fs/cgroup/unified on hybrid hosts).
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options ... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4], nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup2 hierarchy is mounted")
}

// current is the process's cgroup2 path, relative to the mount.
func current() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", errors.New("the process is in no cgroup2 group")
}

// CleanStale removes the cgroups a dead daemon of the named lab left (no process in them any
// more). A group that holds a process, or that served another lab, is left alone.
func CleanStale(lab string) error {
	mnt, err := Mount()
	if err != nil {
		return nil // no cgroup2: nothing can have been left
	}
	entries, err := os.ReadDir(mnt)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		dir := filepath.Join(mnt, e.Name())
		// The top group's cgroup.procs lists the processes of its whole threaded subtree.
		procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil || strings.TrimSpace(string(procs)) != "" {
			continue // in use (or unreadable): not ours to remove
		}
		if !servedOnly(dir, lab) {
			continue
		}
		if err := removeTree(dir); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// servedOnly reports whether a process's lab group holds no group but the named lab's.
func servedOnly(dir, lab string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.IsDir() && e.Name() != "lab-"+lab {
			return false
		}
	}
	return true
}
