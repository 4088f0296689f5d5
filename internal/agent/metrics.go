package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-sec/rampart/internal/dataplane"
)

// metrics are the agent's Prometheus collectors; label sets are bounded (no per-pod labels).
type metrics struct {
	syncSeconds prometheus.Histogram
	syncErrors  prometheus.Counter
	applied     prometheus.Gauge
	localPods   prometheus.Gauge
	policies    prometheus.Gauge
	ready       prometheus.Gauge
	swept       prometheus.Counter
	expired     prometheus.Counter
	entries     *prometheus.GaugeVec
	capacity    *prometheus.GaugeVec
	unenforced  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, dp dataplane.Dataplane) (*metrics, error) {
	m := &metrics{
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rampart_dataplane_sync_seconds", Help: "Time to compile the cluster and sync the dataplane.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "rampart_dataplane_sync_errors_total", Help: "Dataplane syncs that failed (the previous policy stayed in force)."}),
		applied:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_applied_revision", Help: "Source revision whose policy is in force."}),
		localPods:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_local_pods", Help: "Pods on this node that policy applies to."}),
		policies:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_policies", Help: "Policies in force in the cluster."}),
		ready:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_agent_ready", Help: "1 when the agent is ready (policy programmed, source reachable)."}),
		swept:      prometheus.NewCounter(prometheus.CounterOpts{Name: "rampart_swept_connections_total", Help: "Tracked connections removed because a new policy denies them."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "rampart_expired_connections_total",
			Help: "Tracked connections removed after they were idle past their protocol's timeout (dataplanes with their own connection tracking: eBPF)."}),
		unenforced: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_unenforced_policy_fields",
			Help: "Fields of the cluster's policies that rampart does not enforce as written (compiled fail-closed), and objects of policy kinds it does not enforce; the agent's /status lists them."}),
	}
	m.entries = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rampart_programmed_entries",
		Help: "State the dataplane programmed at its last sync, by kind (iptables rules and ipset members; BPF map entries)."}, []string{"kind"})
	m.capacity = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rampart_programmed_capacity",
		Help: "The most entries of each kind the dataplane holds (BPF map sizes): a sync that needs more fails and names the map."}, []string{"kind"})
	cs := []prometheus.Collector{m.syncSeconds, m.syncErrors, m.applied, m.localPods, m.policies, m.ready, m.swept, m.expired, m.entries, m.capacity, m.unenforced}
	if cr, ok := dp.(dataplane.CounterReader); ok {
		cs = append(cs, &counterCollector{cr: cr})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// counterCollector exports a dataplane's packet counters, read at scrape time.
type counterCollector struct{ cr dataplane.CounterReader }

const (
	verdictName = "rampart_packets_total"
	verdictHelp = "Packets a policy decision was made for (new connections and denied packets), by direction and verdict."
)

var (
	packetsDesc = prometheus.NewDesc("rampart_dataplane_packets_total",
		"Packets the dataplane's programs handled, by the path or verdict they took.", []string{"counter"}, nil)
	verdictDesc = prometheus.NewDesc(verdictName, verdictHelp, []string{"direction", "verdict"}, nil)
)

func (c *counterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- packetsDesc; ch <- verdictDesc }

func (c *counterCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.cr.Counters()
	if err != nil {
		return // not synced yet
	}
	for name, n := range counts {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(n), name)
	}
	for _, v := range []struct {
		dir, verdict string
		n            uint64
	}{
		{"ingress", "allowed", counts["allow_ingress"]},
		{"egress", "allowed", counts["allow_egress"]},
		{"ingress", "denied", counts["drop_ingress"]},
		{"egress", "denied", counts["drop_egress"] + counts["drop_spoof"]}, // a spoofed source is the sender's egress
	} {
		ch <- prometheus.MustNewConstMetric(verdictDesc, prometheus.CounterValue, float64(v.n), v.dir, v.verdict)
	}
}
