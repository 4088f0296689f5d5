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
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/threat"
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
			return log.Stream(ctx, f, follow, fn)
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
		all, err := collectFlows(r.Context(), srcs, f)
		if err != nil && len(all) == 0 {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
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

// collectFlows gathers the records matching f from every node, oldest first, and the errors of
// the nodes that did not answer.
func collectFlows(ctx context.Context, srcs map[string]nodeFlows, f flow.Filter) ([]flow.Record, error) {
	var all []flow.Record
	var errs []error
	for _, n := range model.SortedKeys(srcs) {
		errs = append(errs, srcs[n](ctx, f, false, func(rec flow.Record) error { all = append(all, rec); return nil }))
	}
	slices.SortStableFunc(all, func(a, b flow.Record) int { return a.Time.Compare(b.Time) })
	return all, errors.Join(errs...)
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

// liveState is the evaluator of the lab's Ruleset, since when it is in force, and every node's
// records matching f, for live explanations. The threat-defense responses decide first: those
// in force on the nodes of the flow's ends (in-process agents), or, in --kube labs, those the
// lab's state puts in force (feeds and quarantines; the agent processes' automatic responses
// are theirs).
func (l *Lab) liveState(r *http.Request, f flow.Filter) (*policy.Evaluator, time.Time, []flow.Record, error) {
	l.mu.Lock()
	rs, at, c := l.rs, l.rsAt, l.cluster
	l.mu.Unlock()
	if rs == nil {
		return nil, at, nil, errors.New("lab is not up")
	}
	recs, err := collectFlows(r.Context(), l.flowSources(), f)
	if err != nil {
		return nil, at, nil, err
	}
	ev := policy.New(rs)
	if l.kube != nil {
		th, _, err := threat.Threats(c)
		if err != nil {
			return nil, at, nil, err
		}
		return ev.WithThreats(th), at, recs, nil
	}
	q := r.URL.Query()
	var in []threat.InForce
	l.mu.Lock()
	for _, end := range []string{q.Get("from"), q.Get("to")} {
		ip, err := ev.ParseEndpoint(end)
		if err != nil {
			continue // the handler reports it
		}
		node := ""
		if ep := ev.Endpoint(ip); ep.Pod != nil {
			node = ep.Pod.Node
		} else if ep.Node != nil {
			node = ep.Node.Name
		}
		if na := l.agents[node]; na != nil {
			in = append(in, na.Threat().InForce())
		}
	}
	l.mu.Unlock()
	return ev.WithThreats(threat.Union(in...).Threats()), at, recs, nil
}
