package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/threat"
)

// HealthHandler serves /healthz (the process answers), /readyz (Status().Ready), /status
// (the Status as JSON) and /v1/flows (flow records).
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
	mux.Handle("/v1/flows", a.FlowsHandler())
	mux.Handle("/v1/alerts", threat.Handler(a.th.Log()))
	if a.fl != nil {
		mux.Handle("/v1/explain", a.fl.live(func() *policy.Threats { return a.th.InForce().Threats() }))
	}
	return mux
}

// FlowsHandler serves GET /v1/flows (flow.Handler); 404 when flow records are off.
func (a *Agent) FlowsHandler() http.Handler {
	if a.fl == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "flow records are off on this agent (or its dataplane reports none)", http.StatusNotFound)
		})
	}
	return flow.Handler(a.fl.log)
}

// Flows returns the agent's flow log, nil when flow records are off.
func (a *Agent) Flows() *flow.Log {
	if a.fl == nil {
		return nil
	}
	return a.fl.log
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
	c := &Client{http: &http.Client{Timeout: 5 * time.Second, Transport: http.DefaultTransport}, base: "http://" + addr}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		c.base = "http://agent"
		c.http.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	}
	return c
}

// get issues GET path (with its query) and returns the response of a 200; any other status is
// an error with what the agent said.
func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("agent %s: %s: %s", strings.SplitN(path, "?", 2)[0], resp.Status, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

// Status asks the agent for its Status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	resp, err := c.get(ctx, "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// Explain asks the agent for a live explanation of a flow (query: from, to, port, protocol,
// since).
func (c *Client) Explain(ctx context.Context, q url.Values) (flow.Live, error) {
	var out flow.Live
	resp, err := c.get(ctx, "/v1/explain?"+q.Encode())
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// Flows streams the agent's flow records matching f (flow.Fetch); with follow it returns when
// ctx ends or the agent closes the stream.
func (c *Client) Flows(ctx context.Context, f flow.Filter, follow bool, fn func(flow.Record) error) error {
	// No overall timeout: a followed stream stays open.
	return flow.Fetch(ctx, &http.Client{Transport: c.http.Transport}, c.base, f, follow, fn)
}

// Alerts streams the agent's threat-defense alerts matching f; with follow it returns when ctx
// ends or the agent closes the stream.
func (c *Client) Alerts(ctx context.Context, f threat.Filter, follow bool, fn func(threat.Alert) error) error {
	q := url.Values{}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	for k, v := range map[string]string{"type": f.Type, "pod": f.Pod, "namespace": f.Namespace} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if follow {
		q.Set("follow", "true")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/alerts?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: c.http.Transport}).Do(req) // no timeout: a followed stream stays open
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("agent /v1/alerts: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var a threat.Alert
		if err := dec.Decode(&a); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(a); err != nil {
			return err
		}
	}
}

// Metrics returns the agent's metrics in the Prometheus text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.get(ctx, "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// WriteMetrics writes the agent's metrics in the Prometheus text format.
func (a *Agent) WriteMetrics(w io.Writer) error {
	mfs, err := a.cfg.Registry.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}
