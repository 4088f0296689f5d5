// Package nsexec runs Go code inside a named network namespace: sockets created, interface
// indexes resolved and BPF links attached there belong to that namespace.
package nsexec

import (
	"fmt"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread switched into the named namespace ("" runs fn where it is). If the
// thread cannot be switched back, it stays locked so the Go runtime discards it instead of
// reusing it in the wrong namespace.
func Do(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}

// NetlinkSocket opens a netlink socket of proto in the named namespace, bound, with a receive
// buffer of rcvbuf bytes (forced past the sysctl limit when root; best effort) and reads that
// give up after timeout (a lost message must not block its reader forever).
func NetlinkSocket(name string, proto, rcvbuf int, timeout time.Duration) (int, error) {
	fd := -1
	err := Do(name, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// NetnsCookie returns the cookie of the named namespace ("" for the current one): the id BPF
// programs read with bpf_get_netns_cookie (SO_NETNS_COOKIE, Linux 5.14).
func NetnsCookie(name string) (uint64, error) {
	var cookie uint64
	err := Do(name, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); err != nil {
			return fmt.Errorf("netns cookie: %w", err)
		}
		return nil
	})
	return cookie, err
}
