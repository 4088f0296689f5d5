package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/nsexec"
)

// ListenIn returns a Config.ServiceHealth that listens on TCP in the named network namespace
// ("" for the agent's own): a socket keeps the namespace it was made in.
func ListenIn(netns string) func(port uint16) (net.Listener, error) {
	return func(port uint16) (net.Listener, error) {
		var l net.Listener
		err := nsexec.Do(netns, func() error {
			var err error
			l, err = net.Listen("tcp", ":"+strconv.Itoa(int(port)))
			return err
		})
		return l, err
	}
}

// svcHealth answers the health checks of Services with externalTrafficPolicy Local on their
// healthCheckNodePort, as kube-proxy does: HTTP 200 while the node has a local endpoint, 503
// otherwise, so that a cloud's load balancer sends traffic only to nodes that will serve it.
type svcHealth struct {
	listen func(port uint16) (net.Listener, error)
	mu     sync.Mutex
	byPort map[uint16]*hcServer
}

type hcServer struct {
	srv   *http.Server
	state atomic.Pointer[hcState]
}

// hcState is what one health-check port reports.
type hcState struct {
	Namespace, Name string
	Local           int
}

func newSvcHealth(listen func(uint16) (net.Listener, error)) *svcHealth {
	return &svcHealth{listen: listen, byPort: map[uint16]*hcServer{}}
}

// update opens the ports rs's Services need on node, closes those no longer needed, and sets
// what each one answers. A port that cannot be opened is reported and tried again next time.
func (h *svcHealth) update(rs *ir.Ruleset, node string) error {
	want := map[uint16]hcState{}
	for i := range rs.Services {
		s := &rs.Services[i]
		if s.HealthCheckNodePort == 0 || !s.ExternalLocal {
			continue
		}
		local := map[string]bool{}
		for _, sp := range s.Ports {
			for _, b := range ir.Usable(sp.Backends, func(b ir.Backend) bool { return b.Node == node }) {
				local[b.IP.String()] = true
			}
		}
		want[s.HealthCheckNodePort] = hcState{Namespace: s.Namespace, Name: s.Name, Local: len(local)}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for port, srv := range h.byPort {
		if _, ok := want[port]; !ok {
			_ = srv.srv.Close()
			delete(h.byPort, port)
		}
	}
	for port, st := range want {
		srv := h.byPort[port]
		if srv == nil {
			l, err := h.listen(port)
			if err != nil {
				errs = append(errs, fmt.Errorf("health-check node port %d of Service %s/%s: %w", port, st.Namespace, st.Name, err))
				continue
			}
			srv = &hcServer{}
			srv.srv = &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.srv.Serve(l) }()
			h.byPort[port] = srv
		}
		srv.state.Store(&st)
	}
	return errors.Join(errs...)
}

// ServeHTTP answers as kube-proxy's health-check server does.
func (s *hcServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	st := s.state.Load()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(st.Local))
	if st.Local == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	body := map[string]any{
		"service":             map[string]string{"namespace": st.Namespace, "name": st.Name},
		"localEndpoints":      st.Local,
		"serviceProxyHealthy": true,
	}
	_ = json.NewEncoder(w).Encode(body)
}

// close stops every listener.
func (h *svcHealth) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, srv := range h.byPort {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.srv.Shutdown(ctx)
		cancel()
		delete(h.byPort, port)
	}
}
