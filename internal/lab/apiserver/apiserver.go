// Package apiserver runs the project's Kubernetes API server (test/apiserver: a real
// kube-apiserver with an embedded etcd, on loopback) for the lab's --kube mode and for
// integration tests. The binary is built once per source version into the user's cache, so
// only the first use pays for the build.
package apiserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// SourceDir finds test/apiserver: $RAMPART_APISERVER_SRC, or the nearest directory above the
// running executable or the working directory that holds test/apiserver/main.go (a checkout's
// bin/rampart, or a test's package directory).
func SourceDir() (string, error) {
	if d := os.Getenv("RAMPART_APISERVER_SRC"); d != "" {
		return d, nil
	}
	var starts []string
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, d := range starts {
		for {
			cand := filepath.Join(d, "test", "apiserver")
			if _, err := os.Stat(filepath.Join(cand, "main.go")); err == nil {
				return cand, nil
			}
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return "", errors.New("test/apiserver not found above the executable or the working directory; set RAMPART_APISERVER_SRC")
}

// Binary returns the path of the built API server, building it on first use (a few minutes
// cold) into $XDG_CACHE_HOME/rampart (or ~/.cache/rampart), keyed by a hash of its sources.
func Binary() (string, error) {
	src, err := SourceDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "rampart", "test-apiserver-"+hex.EncodeToString(h.Sum(nil))[:12])
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	gobin := "go"
	if _, err := exec.LookPath(gobin); err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	cmd := exec.Command(gobin, "build", "-o", tmp, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test/apiserver: %v\n%s", err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// Server is a running API server.
type Server struct {
	Dir        string
	Kubeconfig string
	cmd        *exec.Cmd
	exited     chan error
	log        *os.File
}

// Options for Start.
type Options struct {
	// Detach puts the server in its own session, so it outlives the caller's terminal (the lab
	// daemon); tests leave it attached.
	Detach bool
}

// Start runs the API server on dir (its etcd data, certificates, ports and kubeconfig live
// there; a second Start on the same dir resumes the same cluster) and waits until it serves.
func Start(ctx context.Context, dir string, opts Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), exited: make(chan error, 1), log: logf}
	_ = os.Remove(s.Kubeconfig)
	s.cmd = exec.Command(bin, dir)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if opts.Detach {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start API server: %w", err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	for {
		if _, err := os.Stat(s.Kubeconfig); err == nil {
			return s, nil
		}
		select {
		case err := <-s.exited:
			logf.Close()
			return nil, fmt.Errorf("the API server exited: %v\n%s", err, s.tail())
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("the API server did not come up: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop kills the server (by its PID) and waits for it to exit.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.exited <- nil // a second Stop returns at once
	s.log.Close()
}

func (s *Server) tail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "apiserver.log"))
	str := strings.TrimSpace(string(b))
	if len(str) > 4000 {
		str = str[len(str)-4000:]
	}
	return str
}
