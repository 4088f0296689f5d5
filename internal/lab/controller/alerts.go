package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/threat"
)

// nodeAlerts streams one node's alerts matching f to fn.
type nodeAlerts func(ctx context.Context, f threat.Filter, follow bool, fn func(threat.Alert) error) error

// alertSources returns every node's alert stream: the in-process agents' logs, or the agent
// processes' /v1/alerts in --kube mode.
func (l *Lab) alertSources() map[string]nodeAlerts {
	out := map[string]nodeAlerts{}
	if l.kube != nil {
		for _, p := range l.kube.procs() {
			out[p.node] = p.client.Alerts
		}
		return out
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, na := range l.agents {
		out[n] = na.Threat().Log().Stream
	}
	return out
}

// serveAlerts answers GET /alerts: every node's alerts merged, oldest first (the query takes
// threat.Handler's parameters); with follow, new alerts as the nodes raise them.
func (l *Lab) serveAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := threat.ParseFilter(q.Get, time.Now())
	if err != nil {
		http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
		return
	}
	follow, _ := strconv.ParseBool(q.Get("follow"))
	srcs := l.alertSources()
	if len(srcs) == 0 {
		http.Error(w, "lab is not up", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if !follow {
		var all []threat.Alert
		var errs []error
		for _, n := range model.SortedKeys(srcs) {
			errs = append(errs, srcs[n](r.Context(), f, false, func(a threat.Alert) error { all = append(all, a); return nil }))
		}
		if err := errors.Join(errs...); err != nil && len(all) == 0 {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		slices.SortStableFunc(all, func(a, b threat.Alert) int { return a.Time.Compare(b.Time) })
		for _, a := range all {
			if enc.Encode(a) != nil {
				return
			}
		}
		return
	}
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for n, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := src(ctx, f, true, func(a threat.Alert) error {
				mu.Lock()
				defer mu.Unlock()
				if err := enc.Encode(a); err != nil {
					cancel()
					return err
				}
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
				return nil
			})
			if err != nil && ctx.Err() == nil {
				l.logger().Warn(fmt.Sprintf("alerts of node %s", n), "err", err)
			}
		}()
	}
	wg.Wait()
}
