package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

// FlowConfig configures flow records.
type FlowConfig struct {
	// Off turns records off (the dataplane still decides; nothing is reported).
	Off bool
	// Aggregate bounds the per-connection aggregation.
	Aggregate flow.Config
	// LogSize is how many published records GET /v1/flows can return (default 8192).
	LogSize int
	// File, if set, also receives every record as a JSON line, rotated at FileMaxBytes
	// (default 100 MiB) keeping FileKeep old files (default 3).
	File         string
	FileMaxBytes int64
	FileKeep     int
}

// flows is the agent's flow-record pipeline: dataplane events -> aggregator -> log.
type flows struct {
	reader dataplane.FlowReader
	agg    *flow.Aggregator
	log    *flow.Log
	file   *flow.RotatingFile

	mu         sync.Mutex
	resolver   *flow.Resolver // of the Ruleset in force
	resolverAt time.Time      // since when (live explanations)
	verdicts   *prometheus.CounterVec
	// packets counts events by direction and verdict, for dataplanes without counters of
	// their own (rampart_packets_total).
	packets *prometheus.CounterVec
	// counted are the policies (kind, namespace, name) with verdict series, so that the
	// series of deleted policies go: the label set stays bounded by the policies in force.
	counted map[[3]string]bool
}

func newFlows(cfg Config, dp dataplane.Dataplane, reg prometheus.Registerer) (*flows, error) {
	fr, ok := dp.(dataplane.FlowReader)
	if cfg.Flows.Off || !ok {
		return nil, nil
	}
	f := &flows{reader: fr, counted: map[[3]string]bool{}}
	var w io.Writer // not a nil *RotatingFile: NewLog tests for a nil Writer
	if cfg.Flows.File != "" {
		rf, err := flow.OpenRotating(cfg.Flows.File, cfg.Flows.FileMaxBytes, cfg.Flows.FileKeep)
		if err != nil {
			return nil, err
		}
		f.file, w = rf, rf
	}
	f.log = flow.NewLog(cfg.Flows.LogSize, w)
	counter, _ := dp.(flow.ConnCounter)
	ac := cfg.Flows.Aggregate
	ac.Node = cfg.Node
	var err error
	if f.agg, err = flow.NewAggregator(ac, f.log, counter); err != nil {
		return nil, err
	}
	f.verdicts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_policy_verdicts_total",
		Help: "Policy decisions on new connections and denied packets, by the policy that decided (kind none: no policy selects the pod)."},
		[]string{"direction", "verdict", "kind", "namespace", "policy"})
	f.agg.OnEvent(f.count)
	cs := []prometheus.Collector{f.verdicts, &flowCollector{f}}
	if _, ok := dp.(dataplane.CounterReader); !ok {
		f.packets = prometheus.NewCounterVec(prometheus.CounterOpts{Name: verdictName, Help: verdictHelp}, []string{"direction", "verdict"})
		for _, d := range []string{"ingress", "egress"} {
			for _, v := range []string{flow.Allowed, flow.Denied} {
				f.packets.WithLabelValues(d, v)
			}
		}
		cs = append(cs, f.packets)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// run reads the dataplane's events into sink (the aggregator, behind the threat engine) and
// publishes records until ctx ends.
func (f *flows) run(ctx context.Context, sink flow.Sink, logErr func(error)) {
	done := make(chan struct{})
	go func() { f.agg.Run(ctx); close(done) }()
	if err := f.reader.ReadFlows(ctx, sink); err != nil {
		logErr(fmt.Errorf("flow events: %w", err))
	}
	<-done
	if f.file != nil {
		f.file.Close()
	}
}

func (f *flows) setResolver(r *flow.Resolver) {
	f.agg.SetResolver(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolver, f.resolverAt = r, time.Now()
	if len(f.counted) == 0 {
		return
	}
	// Verdict counters of policies that are gone go with them.
	rs := r.Ruleset()
	live := map[[3]string]bool{}
	for d := range rs.Tiers {
		for _, t := range rs.Tiers[d] {
			for i := range t.Policies {
				p := &t.Policies[i]
				live[[3]string{p.KindName(), p.Namespace, p.Name}] = true
			}
		}
	}
	for k := range f.counted {
		if !live[k] {
			f.verdicts.DeletePartialMatch(prometheus.Labels{"kind": k[0], "namespace": k[1], "policy": k[2]})
			delete(f.counted, k)
		}
	}
}

// live serves the agent's live explanations (flow.LiveHandler), with the threat-defense
// responses in force on this node (threats) deciding before policy, as they do in the kernel.
func (f *flows) live(threats func() *policy.Threats) http.Handler {
	return flow.LiveHandler(func(_ *http.Request, filt flow.Filter) (*policy.Evaluator, time.Time, []flow.Record, error) {
		f.mu.Lock()
		r, at := f.resolver, f.resolverAt
		f.mu.Unlock()
		if r == nil {
			return nil, at, nil, errors.New("no policy programmed yet")
		}
		return r.Evaluator().WithThreats(threats()), at, f.log.Query(filt), nil
	})
}

// count adds an event to rampart_policy_verdicts_total.
func (f *flows) count(ev flow.Event) {
	f.mu.Lock()
	r := f.resolver
	f.mu.Unlock()
	verdict := flow.Allowed
	if !ev.Allowed {
		verdict = flow.Denied
	}
	kind, ns, name := "none", "", ""
	if ref := r.PolicyRef(&ev); ref != nil {
		kind, ns, name = ref.Kind, ref.Namespace, ref.Name
	}
	if kind != "none" {
		f.mu.Lock()
		f.counted[[3]string{kind, ns, name}] = true
		f.mu.Unlock()
	}
	f.verdicts.WithLabelValues(ev.Direction.String(), verdict, kind, ns, name).Inc()
	if f.packets != nil {
		f.packets.WithLabelValues(ev.Direction.String(), verdict).Inc()
	}
}

var (
	flowRecordsDesc = prometheus.NewDesc("rampart_flow_records_total", "Flow records published.", nil, nil)
	flowDroppedDesc = prometheus.NewDesc("rampart_flow_records_dropped_total",
		"Flow events or records lost, by reason (kernel_ring_full, netlink_overflow, table_full, follower_slow, file_write).", []string{"reason"}, nil)
	flowActiveDesc = prometheus.NewDesc("rampart_flow_connections_active", "Connections being aggregated.", nil, nil)
)

type flowCollector struct{ f *flows }

func (c *flowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- flowRecordsDesc
	ch <- flowDroppedDesc
	ch <- flowActiveDesc
}

func (c *flowCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(flowRecordsDesc, prometheus.CounterValue, float64(c.f.log.Total()))
	ch <- prometheus.MustNewConstMetric(flowActiveDesc, prometheus.GaugeValue, float64(c.f.agg.Active()))
	dropped := c.f.agg.Dropped()
	for _, reason := range []string{"kernel_ring_full", "netlink_overflow", "table_full", "follower_slow", "file_write"} {
		if _, ok := dropped[reason]; !ok {
			dropped[reason] = 0 // every reason has a series from the start, for rate()
		}
	}
	for reason, n := range dropped {
		ch <- prometheus.MustNewConstMetric(flowDroppedDesc, prometheus.CounterValue, float64(n), reason)
	}
}

// withStaged, when the cluster has staged policies, makes r evaluate them too (the Ruleset
// compiled with them), for the records' staged field.
func withStaged(r *flow.Resolver, c *model.Cluster) error {
	if !c.HasStaged() {
		return nil
	}
	staged, err := compile.CompileWith(c, compile.Options{Staged: true})
	if err != nil {
		return fmt.Errorf("compile staged policies: %w", err)
	}
	r.WithStaged(policy.New(staged))
	return nil
}
