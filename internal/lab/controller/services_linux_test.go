package controller_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/labtest"
)

const noEndpointsCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: x}
spec:
  selector: {pod: nothing}
  ports: [{name: tcp, port: 8080, targetPort: 80}, {name: udp, port: 8081, targetPort: 81, protocol: UDP}]
`

// TestLabServiceWithoutEndpoints: as with kube-proxy, a connection to a Service port without
// endpoints is refused at once (ECONNREFUSED) rather than left to time out, on TCP and on
// connected UDP, on both dataplanes (iptables: REJECT before policy; eBPF: the connect-time
// hook's refusal).
func TestLabServiceWithoutEndpoints(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) {
			l := labtest.New(t, 1, dp, noEndpointsCluster)
			_, rs := l.Snapshot()
			var vip netip.Addr
			for _, s := range rs.Services {
				if s.Name == "empty" {
					vip = s.ClusterIPs[0]
				}
			}
			if !vip.IsValid() {
				t.Fatal("no ClusterIP for the Service")
			}
			err := l.Fabric.InPod("x", "a", func() error {
				start := time.Now()
				c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(vip, 8080).String(), 3*time.Second)
				if err == nil {
					c.Close()
					t.Errorf("TCP to %s:8080, a Service without endpoints, connected", vip)
				} else if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 2*time.Second {
					t.Errorf("TCP to %s:8080 without endpoints: %v after %v, want connection refused at once", vip, err, time.Since(start))
				}
				// Connected UDP: refused at connect (eBPF) or on the next read (ICMP port
				// unreachable); retried, as a datagram may go before the neighbour is resolved.
				start = time.Now()
				var uerr error
				for i := 0; i < 3 && !errors.Is(uerr, syscall.ECONNREFUSED); i++ {
					uerr = udpRoundTrip(netip.AddrPortFrom(vip, 8081))
				}
				if !errors.Is(uerr, syscall.ECONNREFUSED) {
					t.Errorf("UDP to %s:8081 without endpoints: %v after %v, want connection refused", vip, uerr, time.Since(start))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// From a process outside the lab's cgroups (lab exec), translated per packet on
			// the veth: refused too (eBPF: an ICMP port unreachable from the ClusterIP).
			out, _ := l.Fabric.Exec(context.Background(), "x", "a", []string{"timeout", "3", "bash", "-c",
				fmt.Sprintf("exec 3<>/dev/tcp/%s/8080", vip)})
			if !strings.Contains(string(out), "Connection refused") {
				t.Errorf("TCP to %s:8080 without endpoints, per packet: %q, want connection refused", vip, out)
			}
		})
	}
}

func udpRoundTrip(dst netip.AddrPort) error {
	c, err := net.Dial("udp4", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = c.Read(make([]byte, 16))
	return err
}
