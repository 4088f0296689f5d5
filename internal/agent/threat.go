package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/threat"
)

// ThreatStatus is the threat-defense part of the agent's status.
type ThreatStatus struct {
	// Config names the ThreatDefense in force ("" : none); File is the sha256 of the
	// Config.ThreatFile content it came from (empty when it came from the cluster or no file).
	Config string `json:"config,omitempty"`
	File   string `json:"file,omitempty"`
	// Generation counts the loads of the configuration in force: each change, and each reload
	// (SIGHUP, or applying the same document again in a lab), is a new one and reloads every
	// feed.
	Generation int64 `json:"generation,omitempty"`
	// Loaded is when the generation in force was loaded.
	Loaded time.Time `json:"loaded,omitzero"`
	// Feeds are the loaded feeds' entry counts; Refused the entries not loaded because they
	// would cut the cluster off.
	Feeds   map[string]int `json:"feeds,omitempty"`
	Refused int            `json:"refused,omitempty"`
	Blocks  int            `json:"blocks,omitempty"` // automatic blocks in force
	Limits  int            `json:"limits,omitempty"` // SYN rate limits in force
	// Quarantined are the pods under quarantine (NS/NAME).
	Quarantined []string `json:"quarantined,omitempty"`
	Alerts      uint64   `json:"alerts"`
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
	if l, ok := dp.(dataplane.SynLimiter); ok {
		tc.Limiter = l
	}
	if q, ok := dp.(dataplane.Quarantiner); ok {
		tc.Quarantiner = q
	}
	if c, ok := dp.(dataplane.ConnLimiter); ok {
		tc.ConnLimiter = c
	}
	if s, ok := dp.(dataplane.Shielder); ok {
		tc.Shielder = s
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

// runThreat drives the engine's periodic work until ctx ends: detector ticks, feed refreshes,
// and, with Config.ThreatFile, a sync when the file changes.
func (a *Agent) runThreat(ctx context.Context) {
	t := time.NewTicker(threat.TickInterval)
	defer t.Stop()
	var fileAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.th.Tick(now)
			if err := a.th.RefreshFeeds(now); err != nil {
				a.cfg.Logger.Error("threat feeds", "err", err)
			}
			if a.cfg.ThreatFile != "" && now.Sub(fileAt) >= threatFilePoll {
				fileAt = now
				if a.threatFileChanged() {
					a.run.Trigger()
				}
			}
		}
	}
}

// threatFilePoll is how often the ThreatDefense file is looked at (a ConfigMap's mounted file
// changes by a symlink swap, which no inotify watch on the file itself sees).
const threatFilePoll = 5 * time.Second

func (a *Agent) threatFileChanged() bool {
	b, err := os.ReadFile(a.cfg.ThreatFile)
	a.mu.Lock()
	defer a.mu.Unlock()
	sum := fileSum(b)
	if err != nil {
		sum = err.Error()
	}
	changed := sum != a.threatSum
	a.threatSum = sum
	return changed
}

func fileSum(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// ReloadThreatFile loads Config.ThreatFile now rather than at the next poll (SIGHUP), as a new
// generation even when it is unchanged: every feed is fetched and read again at once.
func (a *Agent) ReloadThreatFile() {
	if a.cfg.ThreatFile == "" {
		return
	}
	a.threatFileChanged()
	a.mu.Lock()
	a.reloadTD = true
	a.mu.Unlock()
	a.run.Trigger()
}

// threatConfig returns the ThreatDefense in force: the cluster's (the lab's), else the one in
// Config.ThreatFile, read again at every sync; a file that does not decode keeps the previous
// one, and no file at all (an optional ConfigMap that is not there) is no ThreatDefense. Changed
// content, or a reload asked for (SIGHUP), is a new generation, which reads every feed again.
// The caller holds a.mu.
func (a *Agent) threatConfig(c *model.Cluster) (*model.ThreatDefense, error) {
	if c.ThreatDefense != nil || a.cfg.ThreatFile == "" {
		return c.ThreatDefense, nil
	}
	b, err := os.ReadFile(a.cfg.ThreatFile)
	if errors.Is(err, os.ErrNotExist) {
		a.fileTD, a.fileSum = nil, ""
		return nil, nil
	}
	if err != nil {
		return a.fileTD, err
	}
	objs, err := model.Decode(bytes.NewReader(b), a.cfg.ThreatFile, model.DecodeOptions{})
	if err != nil {
		return a.fileTD, err
	}
	if len(objs) != 1 || objs[0].Kind != model.KindThreatDefense {
		return a.fileTD, fmt.Errorf("%s: want exactly one ThreatDefense", a.cfg.ThreatFile)
	}
	td := objs[0].Obj.(*model.ThreatDefense)
	sum := fileSum(b)
	reload := a.reloadTD
	a.reloadTD = false
	if !reload && a.fileTD != nil && sum == a.fileSum {
		return a.fileTD, nil
	}
	a.fileSum = sum
	td.Generation = 1
	if a.fileTD != nil {
		td.Generation = a.fileTD.Generation + 1
	}
	a.fileTD = td
	return td, nil
}

// teeSink hands every dataplane event to the threat engine, and those that are flow records
// (not the blocklist's or the SYN limits' drops) to the aggregator.
type teeSink struct {
	agg    flow.Sink
	threat *threat.Engine
}

func (t teeSink) Observe(ev flow.Event) {
	t.threat.Observe(ev)
	if ev.Drop == "" {
		t.agg.Observe(ev)
	}
}

func (t teeSink) Lost(reason string, n uint64) { t.agg.Lost(reason, n) }
