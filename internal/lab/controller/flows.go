package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// nodeFlows streams one node's records matching f to fn.
type nodeFlows func(ctx context.Context, f flow.Filter, follow bool, fn func(flow.Record) error) error

// flowSources returns every node's record stream: the in-process agents' logs, or the agent
// processes' /v1/flows in --kube mode.
func (l *Lab) flowSources() map[string]nodeFlows {
	out := map[string]nodeFlows{}
	if l.kube != nil {
		for _, p := range l.kube.procs() {
			out[p.node] = p.client.Flows
		}
		return out
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, na := range l.agents {
		log := na.Flows()
		out[n] = func(ctx context.Context, f flow.Filter, follow bool, fn func(flow.Record) error) error {
			if log == nil {
				return fmt.Errorf("node %s: flow records are off", n)
			}
			if !follow {
				for _, r := range log.Query(f) {
					if err := fn(r); err != nil {
						return err
					}
				}
				return nil
			}
			past, ch, cancel := log.Follow(f)
			defer cancel()
			for _, r := range past {
				if err := fn(r); err != nil {
					return err
				}
			}
			for {
				select {
				case <-ctx.Done():
					return nil
				case r := <-ch:
					if err := fn(r); err != nil {
						return err
					}
				}
			}
		}
	}
	return out
}

// serveFlows answers GET /flows: every node's records merged, oldest first (the query takes
// flow.Handler's parameters); with follow, new records as the nodes publish them.
func (l *Lab) serveFlows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := flow.ParseFilter(q, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	follow, _ := strconv.ParseBool(q.Get("follow"))
	srcs := l.flowSources()
	if len(srcs) == 0 {
		http.Error(w, "lab is not up", http.StatusServiceUnavailable)
		return
	}
	if f.Node != "" {
		s, ok := srcs[f.Node]
		if !ok {
			http.Error(w, fmt.Sprintf("no node %q in the lab", f.Node), http.StatusBadRequest)
			return
		}
		srcs = map[string]nodeFlows{f.Node: s}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if !follow {
		var all []flow.Record
		var errs []error
		for _, n := range model.SortedKeys(srcs) {
			errs = append(errs, srcs[n](r.Context(), f, false, func(rec flow.Record) error { all = append(all, rec); return nil }))
		}
		if err := errors.Join(errs...); err != nil && len(all) == 0 {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		slices.SortStableFunc(all, func(a, b flow.Record) int { return a.Time.Compare(b.Time) })
		for _, rec := range all {
			if enc.Encode(rec) != nil {
				return
			}
		}
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = src(ctx, f, true, func(rec flow.Record) error {
				mu.Lock()
				defer mu.Unlock()
				if err := enc.Encode(rec); err != nil {
					cancel()
					return err
				}
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
				return nil
			})
		}()
	}
	wg.Wait()
}

// serveMetrics answers GET /metrics: each node agent's metrics in the Prometheus text format,
// each block headed by a "# node NODE" line (node=NAME: that node's only).
func (l *Lab) serveMetrics(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	blocks, err := l.agentMetrics(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if node != "" {
		b, ok := blocks[node]
		if !ok {
			http.Error(w, fmt.Sprintf("no node %q in the lab", node), http.StatusBadRequest)
			return
		}
		blocks = map[string]string{node: b}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, n := range model.SortedKeys(blocks) {
		fmt.Fprintf(w, "# node %s\n%s", n, blocks[n])
		if !strings.HasSuffix(blocks[n], "\n") {
			io.WriteString(w, "\n")
		}
	}
}

func (l *Lab) agentMetrics(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	if l.kube != nil {
		for _, p := range l.kube.procs() {
			m, err := p.client.Metrics(ctx)
			if err != nil {
				return nil, fmt.Errorf("node %s: %w", p.node, err)
			}
			out[p.node] = m
		}
		return out, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.agents) == 0 {
		return nil, errors.New("lab is not up")
	}
	for n, na := range l.agents {
		var b strings.Builder
		if err := na.WriteMetrics(&b); err != nil {
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
		out[n] = b.String()
	}
	return out, nil
}

// liveState is the lab's Ruleset and every node's records matching f, for live explanations.
func (l *Lab) liveState(r *http.Request, f flow.Filter) (*ir.Ruleset, time.Time, []flow.Record, error) {
	l.mu.Lock()
	rs, at := l.rs, l.rsAt
	l.mu.Unlock()
	if rs == nil {
		return nil, at, nil, errors.New("lab is not up")
	}
	var recs []flow.Record
	srcs := l.flowSources()
	for _, n := range model.SortedKeys(srcs) {
		if err := srcs[n](r.Context(), f, false, func(rec flow.Record) error { recs = append(recs, rec); return nil }); err != nil {
			return nil, at, nil, err
		}
	}
	return rs, at, recs, nil
}
