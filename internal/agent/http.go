package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HealthHandler serves /healthz (the process answers), /readyz (Status().Ready) and /status
// (the Status as JSON).
func (a *Agent) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if st := a.Status(); !st.Ready {
			http.Error(w, "not ready: "+st.Reason, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.Status())
	})
	return mux
}

// MetricsHandler serves the agent's registry in the Prometheus text format.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.cfg.Registry, promhttp.HandlerOpts{})
}

// Client reads an agent's /status.
type Client struct {
	http *http.Client
	base string
}

// NewClient returns a client for an agent's health address: host:port or unix:PATH.
func NewClient(addr string) *Client {
	c := &Client{http: &http.Client{Timeout: 5 * time.Second}, base: "http://" + addr}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		c.base = "http://agent"
		c.http.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	}
	return c
}

// Status asks the agent for its Status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("agent status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
