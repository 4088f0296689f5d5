package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/threat"
)

// ThreatStatus is the threat-defense part of the agent's status.
type ThreatStatus struct {
	// Config names the ThreatDefense in force ("" : none).
	Config string `json:"config,omitempty"`
	// Feeds are the loaded feeds' entry counts; Refused the entries not loaded because they
	// would cut the cluster off.
	Feeds   map[string]int `json:"feeds,omitempty"`
	Refused int            `json:"refused,omitempty"`
	Blocks  int            `json:"blocks,omitempty"` // automatic blocks in force
	Alerts  uint64         `json:"alerts"`
	// Error is why the last configuration could not be taken (the previous stays in force).
	Error string `json:"error,omitempty"`
}

// threatMetrics are the engine's Prometheus series.
type threatMetrics struct {
	alerts *prometheus.CounterVec
}

func newThreat(cfg Config, dp dataplane.Dataplane, reg prometheus.Registerer) (*threat.Engine, error) {
	m := &threatMetrics{alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rampart_threat_alerts_total",
		Help: "Threat-defense alerts raised on this node, by type and response."}, []string{"type", "response"})}
	if err := reg.Register(m.alerts); err != nil {
		return nil, err
	}
	tc := threat.Config{Node: cfg.Node, Logger: cfg.Logger.With("component", "threat"), OnAlert: func(a threat.Alert) {
		m.alerts.WithLabelValues(a.Type, a.Response).Inc()
		if cfg.OnAlert != nil {
			cfg.OnAlert(a)
		}
	}}
	if b, ok := dp.(dataplane.Blocker); ok {
		tc.Blocker = b
	}
	e := threat.New(tc)
	feeds := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rampart_threat_feed_entries", Help: "Entries of the threat feeds loaded."}, func() float64 {
		n := 0
		for _, v := range e.FeedEntries() {
			n += v
		}
		return float64(n)
	})
	if err := reg.Register(feeds); err != nil {
		return nil, err
	}
	return e, nil
}

// runThreat drives the engine's periodic work until ctx ends.
func runThreat(ctx context.Context, e *threat.Engine) {
	t := time.NewTicker(threat.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.Tick(now)
		}
	}
}

// protected are the ranges no feed may block: the nodes' pod ranges and addresses, and every
// Service's cluster IPs.
func protected(c *model.Cluster) threat.Protected {
	var p threat.Protected
	for _, n := range c.Nodes {
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if pfx, err := netip.ParsePrefix(s); err == nil {
				p.Ranges = append(p.Ranges, pfx.Masked())
			}
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				p.Nodes = append(p.Nodes, ip)
			}
		}
	}
	for _, s := range c.Services {
		for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
			if a, err := netip.ParseAddr(ip); err == nil {
				p.Ranges = append(p.Ranges, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return p
}

// teeSink hands every dataplane event to the threat engine, and those that are flow records
// (not the blocklist's early drops) to the aggregator.
type teeSink struct {
	agg    flow.Sink
	threat *threat.Engine
}

func (t teeSink) Observe(ev flow.Event) {
	t.threat.Observe(ev)
	if !ev.Blocked {
		t.agg.Observe(ev)
	}
}

func (t teeSink) Lost(reason string, n uint64) { t.agg.Lost(reason, n) }
