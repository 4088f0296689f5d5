package fabric

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/controller"
)

// maxParallel bounds concurrent probes (each holds an OS thread inside a namespace).
const maxParallel = 256

// Probe runs probes in parallel from their pods' namespaces.
func (f *Fabric) Probe(ctx context.Context, specs []controller.ProbeSpec) []controller.ProbeResult {
	f.mu.Lock()
	pods := map[string]*pod{}
	for k, p := range f.pods {
		pods[k] = p
	}
	f.mu.Unlock()
	out := make([]controller.ProbeResult, len(specs))
	sem := make(chan struct{}, maxParallel)
	var wg sync.WaitGroup
	ext := &pod{netns: f.ExternalNetns()} // outside the cluster: no cgroup, no socket hooks
	for i, s := range specs {
		p, ok := pods[s.FromNamespace+"/"+s.FromName]
		if s.External {
			p, ok = ext, true
		}
		if !ok {
			out[i] = controller.ProbeResult{Err: "no such pod in the lab"}
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, s controller.ProbeSpec, p *pod) {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = f.probe(ctx, p, s.Dst, s.Protocol, s.Timeout)
		}(i, s, p)
	}
	wg.Wait()
	return out
}

// probe makes one connection attempt from a pod; it counts as connected only when the server
// answered.
func (f *Fabric) probe(ctx context.Context, p *pod, dst netip.AddrPort, proto string, timeout time.Duration) controller.ProbeResult {
	start := time.Now()
	var ok bool
	var answer string
	var perr error
	err := f.inPod(p, func() error {
		switch proto {
		case "TCP":
			ok, answer, perr = probeTCP(ctx, dst, timeout)
		case "UDP":
			ok, answer, perr = probeUDP(dst, timeout)
		case "SCTP":
			ok, perr = probeSCTP(dst, timeout)
		default:
			perr = fmt.Errorf("unsupported protocol %q", proto)
		}
		return nil
	})
	r := controller.ProbeResult{Connected: ok, Ms: float64(time.Since(start).Microseconds()) / 1000}
	r.Server, r.Client, _ = strings.Cut(strings.TrimSpace(answer), " ")
	if err = errors.Join(err, perr); err != nil {
		r.Err = err.Error()
	}
	return r
}

// probeTCP connects and reads the server's greeting: its name and the client it saw.
func probeTCP(ctx context.Context, dst netip.AddrPort, timeout time.Duration) (bool, string, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp4", dst.String())
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	answer, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false, "", fmt.Errorf("connected but no answer: %w", err)
	}
	return true, answer, nil
}

// probeUDP sends a datagram and reads the server's answer: its name and the client it saw.
func probeUDP(dst netip.AddrPort, timeout time.Duration) (bool, string, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	_ = c.SetDeadline(deadline)
	buf := make([]byte, 512)
	// Resend a few times within the timeout: the first datagram can be lost while ARP resolves.
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte("probe")); err != nil {
			return false, "", err
		}
		_ = c.SetReadDeadline(minTime(deadline, time.Now().Add(timeout/3)))
		if n, err := c.Read(buf); err == nil {
			return true, string(buf[:n]), nil
		} else if !isTimeout(err) {
			return false, "", err
		}
	}
	return false, "", fmt.Errorf("no answer within %s", timeout)
}

func probeSCTP(dst netip.AddrPort, timeout time.Duration) (bool, error) {
	c, err := net.ListenIP("ip4:132", nil)
	if err != nil {
		return false, err
	}
	defer c.Close()
	src := uint16(32768 + rand.Intn(28000))
	tag := rand.Uint32() | 1
	to := &net.IPAddr{IP: dst.Addr().AsSlice()}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt < 3 {
			if _, err := c.WriteTo(encodeInit(src, dst.Port(), tag, tag), to); err != nil {
				return false, err
			}
		}
		_ = c.SetReadDeadline(minTime(deadline, time.Now().Add(timeout/3)))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				if isTimeout(err) {
					break
				}
				return false, err
			}
			p, err := decodeSCTP(buf[:n])
			if err != nil || p.SrcPort != dst.Port() || p.DstPort != src || p.VTag != tag {
				continue
			}
			switch p.ChunkType {
			case chunkInitAck:
				return true, nil
			case chunkAbort:
				return false, errors.New("ABORT: port not served")
			}
		}
	}
	return false, fmt.Errorf("no INIT-ACK within %s", timeout)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// InPod runs fn as the pod's own processes would run: in its network namespace and, when the
// lab has cgroups, in its cgroup.
func (f *Fabric) InPod(ns, name string, fn func() error) error {
	f.mu.Lock()
	p, ok := f.pods[ns+"/"+name]
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("no pod %s/%s", ns, name)
	}
	return f.inPod(p, fn)
}

// InExternal runs fn in the external client's namespace (outside the cluster).
func (f *Fabric) InExternal(fn func() error) error { return inNetns(f.ExternalNetns(), fn) }

// DialTCP opens a TCP connection from a pod's namespace; tests use it to hold a connection
// open across policy changes.
func (f *Fabric) DialTCP(ctx context.Context, ns, name string, dst netip.AddrPort) (net.Conn, error) {
	f.mu.Lock()
	p, ok := f.pods[ns+"/"+name]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no pod %s/%s", ns, name)
	}
	var c net.Conn
	err := f.inPod(p, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp4", dst.String())
		return err
	})
	return c, err
}

// Load measures an established TCP connection from one pod to the echo server at dst, for d:
// the bytes per second it moves (writing 64 KiB chunks and reading them back) and, on a second
// connection, how many one-line request/responses per second it completes. Bounded in time.
func (f *Fabric) Load(ctx context.Context, ns, name string, dst netip.AddrPort, d time.Duration) (bytesPerSec, rrPerSec float64, err error) {
	stream, err := f.DialTCP(ctx, ns, name, dst)
	if err != nil {
		return 0, 0, err
	}
	defer stream.Close()
	r := bufio.NewReaderSize(stream, 1<<16)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		return 0, 0, err
	}
	chunk := make([]byte, 64<<10)
	done := make(chan int64)
	deadline := time.Now().Add(d)
	_ = stream.SetDeadline(deadline.Add(2 * time.Second))
	go func() { // read back what the server echoes
		var n int64
		buf := make([]byte, 64<<10)
		for {
			m, err := r.Read(buf)
			n += int64(m)
			if err != nil {
				done <- n
				return
			}
		}
	}()
	start := time.Now()
	for time.Now().Before(deadline) {
		if _, err := stream.Write(chunk); err != nil {
			break
		}
	}
	elapsed := time.Since(start)
	_ = stream.(*net.TCPConn).CloseWrite()
	echoed := <-done
	bytesPerSec = float64(echoed) / elapsed.Seconds()

	rr, err := f.DialTCP(ctx, ns, name, dst)
	if err != nil {
		return 0, 0, err
	}
	defer rr.Close()
	rb := bufio.NewReader(rr)
	if _, err := rb.ReadString('\n'); err != nil {
		return 0, 0, err
	}
	_ = rr.SetDeadline(time.Now().Add(d + 2*time.Second))
	n := 0
	start = time.Now()
	for time.Since(start) < d {
		if _, err := rr.Write([]byte("ping\n")); err != nil {
			return 0, 0, err
		}
		if _, err := rb.ReadString('\n'); err != nil {
			return 0, 0, err
		}
		n++
	}
	return bytesPerSec, float64(n) / time.Since(start).Seconds(), nil
}

// ConnectLoad opens new connections from a pod (or, with ns "" and name controller.External,
// from the external client) to the server at dst, one after the other, for d: TCP connect, "quit", the server's greeting and close (the server closes first), or a UDP
// request from a new socket and its reply. It returns the completed connections per second
// and how many attempts failed (refused, reset or no answer within 250 ms). Bounded in time.
func (f *Fabric) ConnectLoad(ctx context.Context, ns, name string, dst netip.AddrPort, proto string, d time.Duration) (perSec float64, failed int, err error) {
	n, failed, elapsed, err := f.connections(ctx, ns, name, dst, proto, func(_ int, start time.Time) bool { return time.Since(start) < d })
	if err != nil {
		return 0, failed, err
	}
	return float64(n) / elapsed.Seconds(), failed, nil
}

// Connections makes count connections as ConnectLoad does and returns how many completed.
func (f *Fabric) Connections(ctx context.Context, ns, name string, dst netip.AddrPort, proto string, count int) (ok, failed int, err error) {
	ok, failed, _, err = f.connections(ctx, ns, name, dst, proto, func(i int, _ time.Time) bool { return i < count })
	return ok, failed, err
}

// ConnectLatency makes count TCP connections as ConnectLoad does and returns the median time
// connect() took (the SYN's round trip, where a Service's first packet is translated) and how
// many attempts failed.
func (f *Fabric) ConnectLatency(ctx context.Context, ns, name string, dst netip.AddrPort, count int) (time.Duration, int, error) {
	f.mu.Lock()
	p, ok := f.pods[ns+"/"+name]
	f.mu.Unlock()
	if !ok {
		return 0, 0, fmt.Errorf("no pod %s/%s", ns, name)
	}
	var took []time.Duration
	failed := 0
	err := f.inPod(p, func() error {
		buf := make([]byte, 256)
		for i := 0; i < count && ctx.Err() == nil; i++ {
			start := time.Now()
			c, err := net.DialTimeout("tcp4", dst.String(), 250*time.Millisecond)
			if err != nil {
				failed++
				continue
			}
			took = append(took, time.Since(start))
			_ = c.SetDeadline(time.Now().Add(250 * time.Millisecond))
			_, _ = c.Write([]byte("quit\n"))
			_, _ = c.Read(buf) // the greeting; the server closes first
			c.Close()
		}
		return nil
	})
	if err != nil || len(took) == 0 {
		return 0, failed, errors.Join(err, fmt.Errorf("no connection to %s completed", dst))
	}
	slices.Sort(took)
	return took[len(took)/2], failed, nil
}

func (f *Fabric) connections(ctx context.Context, ns, name string, dst netip.AddrPort, proto string, more func(i int, start time.Time) bool) (n, failed int, elapsed time.Duration, err error) {
	// From a pod, or from the external client (name controller.External, no namespace).
	in := f.InExternal
	if ns != "" || name != controller.External {
		f.mu.Lock()
		p, ok := f.pods[ns+"/"+name]
		f.mu.Unlock()
		if !ok {
			return 0, 0, 0, fmt.Errorf("no pod %s/%s", ns, name)
		}
		in = func(fn func() error) error { return f.inPod(p, fn) }
	}
	if proto != "TCP" && proto != "UDP" {
		return 0, 0, 0, fmt.Errorf("connect load: protocol %q: want TCP or UDP", proto)
	}
	err = in(func() error {
		buf := make([]byte, 256)
		start := time.Now()
		for i := 0; more(i, start) && ctx.Err() == nil; i++ {
			if oneConnection(dst, proto, buf) {
				n++
			} else {
				failed++
			}
		}
		elapsed = time.Since(start)
		return nil
	})
	return n, failed, elapsed, err
}

func oneConnection(dst netip.AddrPort, proto string, buf []byte) bool {
	const timeout = 250 * time.Millisecond
	if proto == "UDP" {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return false
		}
		_, err = c.Read(buf)
		return err == nil
	}
	c, err := net.DialTimeout("tcp4", dst.String(), timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("quit\n")); err != nil {
		return false
	}
	// Greeting, then EOF: the server has closed its side.
	for {
		if _, err := c.Read(buf); err != nil {
			return errors.Is(err, io.EOF)
		}
	}
}
