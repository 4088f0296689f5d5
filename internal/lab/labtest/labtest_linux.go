// Package labtest brings up throwaway labs for privileged tests: a unique name, the full stack
// (controller, fabric, dataplane) in the test process, and a teardown in t.Cleanup that also
// checks no namespace of the lab is left.
package labtest

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/fabric"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

// Lab is a running test lab.
type Lab struct {
	*controller.Lab
	Fabric *fabric.Fabric
}

// New brings up a lab of nodes nodes with the given dataplane from manifests.
func New(t testing.TB, nodes int, dataplane, manifests string) Lab {
	t.Helper()
	return newLab(t, nodes, dataplane, manifests, "")
}

// NewKube brings up a --kube lab: a real API server holding the objects and one agent process
// per node, running the rampart binary exe.
func NewKube(t testing.TB, nodes int, dataplane, manifests, exe string) Lab {
	t.Helper()
	return newLab(t, nodes, dataplane, manifests, exe)
}

// NewWith brings up a lab with settings s (Name is chosen here) from manifests.
func NewWith(t testing.TB, s controller.Settings, manifests string) Lab {
	t.Helper()
	return newLabSettings(t, s, manifests, "")
}

func newLab(t testing.TB, nodes int, dataplane, manifests, exe string) Lab {
	t.Helper()
	return newLabSettings(t, controller.Settings{Nodes: nodes, Dataplane: dataplane}, manifests, exe)
}

func newLabSettings(t testing.TB, s controller.Settings, manifests, exe string) Lab {
	t.Helper()
	netnstest.RequireRoot(t, "ip", "iptables-restore", "ipset")
	controller.StateRoot = t.TempDir()
	name := fmt.Sprintf("t%d-%d", os.Getpid()%100000, rand.Intn(100000))
	objs, err := model.Decode(strings.NewReader(manifests), "test", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := fabric.New(name)
	s.Name, s.Kube = name, exe != ""
	l := controller.New(s, model.FromObjects(objs), f)
	t.Cleanup(func() {
		if err := l.Teardown(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		if strings.Contains(string(out), fabric.Prefix(name)) {
			t.Errorf("namespaces left behind:\n%s", out)
		}
	})
	up := l.Reconcile
	if exe != "" {
		up = func(ctx context.Context) error { return l.StartKube(ctx, exe) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := up(ctx); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return Lab{l, f}
}

// Echo wraps a TCP connection to a lab server: it reads the server's greeting line, and the
// returned function sends one line and checks the echo, within a second.
func Echo(t testing.TB, conn net.Conn) func(msg string) error {
	t.Helper()
	_, echo := Greeted(t, conn)
	return echo
}

// Greeted is Echo that also returns the server's greeting: "ns/pod client-address".
func Greeted(t testing.TB, conn net.Conn) (string, func(msg string) error) {
	t.Helper()
	r := bufio.NewReader(conn)
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	greeting, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return strings.TrimSpace(greeting), func(msg string) error {
		_ = conn.SetDeadline(time.Now().Add(time.Second))
		if _, err := conn.Write([]byte(msg + "\n")); err != nil {
			return err
		}
		got, err := r.ReadString('\n')
		if err == nil && got != msg+"\n" {
			err = fmt.Errorf("echo %q, want %q", got, msg)
		}
		return err
	}
}
