// Package agent keeps one node's dataplane converged with a source of cluster state: it waits
// for the source's first sync, coalesces bursts of changes (runner), compiles the cluster into
// the IR, syncs the dataplane, sweeps tracked connections the new policy denies, and records
// the revision it applied, and publishes flow records from the dataplane's events. A failed sync leaves the previous policy in force and is retried
// with backoff; it shows in the status, the log and the metrics. The lab (one agent per lab
// node over its store) and `rampart agent` on a real node (over informers) run this same code.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rampart-sec/rampart/internal/agent/runner"
	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/source"
	"github.com/rampart-sec/rampart/internal/threat"
)

// Config is one agent's settings.
type Config struct {
	// Node is the node's name: its local pods are those with spec.nodeName equal to it.
	Node string
	// Dataplane names the backend, for status and metrics.
	Dataplane dataplane.Kind
	// Runner bounds how often the dataplane is synced.
	Runner runner.Config
	// DisconnectGrace is how long the source may be unreachable before the agent reports not
	// ready (enforcement continues with the last state meanwhile and after).
	DisconnectGrace time.Duration
	// Logger receives structured logs (default: discarded).
	Logger *slog.Logger
	// Registry is where the agent's metrics are registered (default: a registry of its own,
	// with the Go runtime and process collectors).
	Registry *prometheus.Registry
	// PodInterfacePrefix: new interfaces with it are guarded (dataplane.Guarder) until synced.
	PodInterfacePrefix string
	// Flows configures flow records (on by default where the dataplane reports flows).
	Flows FlowConfig
	// OnUnenforced, when set, is told of each policy field not enforced as written when it
	// first appears (in a cluster: a Kubernetes Event on the object).
	OnUnenforced func(model.Gap)
	// OnAlert, when set, is told of every threat-defense alert (in a cluster: a Kubernetes
	// Event on the affected pod).
	OnAlert func(threat.Alert)
	// ThreatFile, when set, holds the ThreatDefense (a mounted ConfigMap) for sources that have
	// none of their own (the Kubernetes one); it is read at every sync and looked at every few
	// seconds for changes.
	ThreatFile string
	// ServiceHealth, when set, opens a listener on the node (ListenIn): the agent then answers
	// the health checks of Services with externalTrafficPolicy Local on their
	// healthCheckNodePort, as kube-proxy does. Unset where kube-proxy runs.
	ServiceHealth func(port uint16) (net.Listener, error)
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	// MinInterval 0 is meaningful (sync as changes come): bursts still coalesce while a sync
	// runs, since triggers pending a run are one.
	if c.Runner.RetryMin == 0 {
		c.Runner.RetryMin = 200 * time.Millisecond
	}
	if c.Runner.MaxInterval == 0 {
		// Repairs state changed behind the agent's back (a rule deleted by hand).
		c.Runner.MaxInterval = 5 * time.Minute
	}
	c.Runner.Defaults()
	if c.DisconnectGrace == 0 {
		c.DisconnectGrace = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
		c.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("agent: the node name is required (--node-name or $NODE_NAME)"))
	}
	if c.DisconnectGrace < 0 {
		errs = append(errs, errors.New("agent: DisconnectGrace must not be negative"))
	}
	errs = append(errs, c.Runner.Validate(), c.Flows.Aggregate.Validate())
	return errors.Join(errs...)
}

// Agent converges one node.
type Agent struct {
	cfg Config
	src source.Source
	dp  dataplane.Dataplane
	run *runner.Runner
	m   *metrics
	fl  *flows // nil: no flow records
	th  *threat.Engine
	hc  *svcHealth // nil: Services' health checks are kube-proxy's
	// compiler carries what the last sync resolved to the next (used by sync only, which the
	// runner never runs twice at once).
	compiler *compile.Compiler
	// resolver is the last applied Ruleset's (sync only): the next shares its address index
	// when no pod or node changed.
	resolver *flow.Resolver

	mu       sync.Mutex
	st       Status
	progress chan struct{} // closed and replaced after every sync attempt
	// fileTD is the last ThreatDefense read from Config.ThreatFile and fileSum the hash of the
	// content it came from; threatSum is the file's hash at the last poll.
	fileTD    *model.ThreatDefense
	fileSum   string
	threatSum string
	// reloadTD asks the next sync to load the file's ThreatDefense as a new generation even
	// when it is unchanged (SIGHUP), which reloads every feed at once.
	reloadTD bool
}

// Status is what the agent has done.
type Status struct {
	Node      string         `json:"node"`
	Dataplane dataplane.Kind `json:"dataplane"`
	Ready     bool           `json:"ready"`
	Reason    string         `json:"reason,omitempty"` // why not ready
	// Applied is the source revision in force (0 before the first successful sync).
	Applied uint64 `json:"applied"`
	// ResourceVersion, for an API server source, is the highest resourceVersion the source had
	// seen when the state in force was read: every write up to it is enforced.
	ResourceVersion uint64 `json:"resourceVersion,omitempty"`
	// ResourceVersions is the same per kind (each kind has its own watch, so a barrier must
	// compare kind by kind).
	ResourceVersions map[string]uint64 `json:"resourceVersions,omitempty"`
	LastSync         time.Time         `json:"lastSync,omitzero"`
	SyncCount        uint64            `json:"syncs"`
	// LastError is the last sync's error, empty after a success; ErrorRevision is the revision
	// it was for.
	LastError     string        `json:"lastError,omitempty"`
	ErrorRevision uint64        `json:"errorRevision,omitempty"`
	Source        source.Status `json:"source"`
	LocalPods     int           `json:"localPods"`
	Policies      int           `json:"policies"`
	// Unenforced lists what the cluster's policies say that rampart does not enforce as
	// written (model.Unsupported: compiled fail-closed), so no gap is silent.
	Unenforced []string     `json:"unenforced,omitempty"`
	Threat     ThreatStatus `json:"threat"`
}

// New returns an agent; Run starts it.
func New(cfg Config, src source.Source, dp dataplane.Dataplane) (*Agent, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, src: src, dp: dp, progress: make(chan struct{}), compiler: compile.NewCompiler(compile.Options{}),
		st: Status{Node: cfg.Node, Dataplane: cfg.Dataplane, Reason: "waiting for the first sync"}}
	var err error
	if a.run, err = runner.New(a.sync, cfg.Runner); err != nil {
		return nil, err
	}
	if a.m, err = newMetrics(cfg.Registry, dp); err != nil {
		return nil, err
	}
	if a.fl, err = newFlows(cfg, dp, cfg.Registry); err != nil {
		return nil, err
	}
	if a.th, err = newThreat(cfg, dp, cfg.Registry); err != nil {
		return nil, err
	}
	if cfg.ServiceHealth != nil {
		a.hc = newSvcHealth(cfg.ServiceHealth)
	}
	return a, nil
}

// Run waits for the source's first sync, then keeps the dataplane converged until ctx ends.
// It leaves enforcement in force when it returns: the dataplane is released, not closed.
func (a *Agent) Run(ctx context.Context) error {
	log := a.cfg.Logger
	log.Info("agent starting", "node", a.cfg.Node, "dataplane", a.cfg.Dataplane)
	changes := a.src.Subscribe(ctx)
	select {
	case <-a.src.Synced():
	case <-ctx.Done():
		return a.release()
	}
	log.Info("cluster state synced")
	done := make(chan struct{})
	go func() { a.run.Run(ctx); close(done) }()
	threatDone := make(chan struct{})
	go func() { a.runThreat(ctx); close(threatDone) }()
	defer func() { <-threatDone }()
	if a.fl != nil {
		flowsDone := make(chan struct{})
		go func() {
			a.fl.run(ctx, teeSink{a.fl.agg, a.th}, func(err error) { log.Error("flow records stopped", "err", err) })
			close(flowsDone)
		}()
		defer func() { <-flowsDone }()
	}
	if c, ok := a.dp.(dataplane.Collector); ok {
		gcDone := make(chan struct{})
		go func() { a.expire(ctx, c); close(gcDone) }()
		defer func() { <-gcDone }()
	}
	a.run.Trigger()
	for {
		select {
		case <-ctx.Done():
			<-done
			if a.hc != nil {
				a.hc.close()
			}
			return a.release()
		case <-changes:
			a.run.Trigger()
		}
	}
}

// expireEvery is how often the agent has a dataplane with its own connection tracking remove
// the flows idle past their timeout.
const expireEvery = 30 * time.Second

func (a *Agent) expire(ctx context.Context, c dataplane.Collector) {
	t := time.NewTicker(expireEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := c.CollectGarbage()
		if err != nil {
			a.cfg.Logger.Warn("expire idle connections", "err", err)
		}
		a.m.expired.Add(float64(n))
	}
}

func (a *Agent) release() error {
	if r, ok := a.dp.(dataplane.Releaser); ok {
		if err := r.Release(); err != nil {
			return fmt.Errorf("release the dataplane: %w", err)
		}
	}
	a.cfg.Logger.Info("agent stopped; enforcement stays in force")
	return nil
}

// InterfaceChanged is told of every link (name) or route ("") change in the node's namespace:
// a new pod interface is put under the dataplane's guard at once, then a sync programs it.
func (a *Agent) InterfaceChanged(name string) {
	if g, ok := a.dp.(dataplane.Guarder); ok && name != "" && a.cfg.PodInterfacePrefix != "" && strings.HasPrefix(name, a.cfg.PodInterfacePrefix) {
		if err := g.Guard(name); err != nil {
			a.cfg.Logger.Warn("guard a new pod interface", "interface", name, "err", err)
		}
	}
	a.run.Trigger()
}

// reportGaps records the policy fields not enforced as written, logging each one when it
// first appears. The caller holds a.mu.
func (a *Agent) reportGaps(gaps []model.Gap) {
	was := map[string]bool{}
	for _, g := range a.st.Unenforced {
		was[g] = true
	}
	a.st.Unenforced = nil
	for _, g := range gaps {
		s := g.String()
		if !was[s] {
			a.cfg.Logger.Warn("policy not enforced as written", "apiVersion", g.APIVersion, "kind", g.Kind, "namespace", g.Namespace, "name", g.Name, "field", g.Field, "detail", g.Msg)
			if a.cfg.OnUnenforced != nil {
				a.cfg.OnUnenforced(g)
			}
		}
		a.st.Unenforced = append(a.st.Unenforced, s)
	}
	a.m.unenforced.Set(float64(len(gaps)))
}

// sync brings the dataplane to the source's current state.
func (a *Agent) sync(ctx context.Context) error {
	var rv uint64
	var rvs map[string]uint64
	if v, ok := a.src.(interface{ ResourceVersion() uint64 }); ok {
		rv = v.ResourceVersion() // before the snapshot: it holds at least this much
	}
	if v, ok := a.src.(interface{ ResourceVersions() map[string]uint64 }); ok {
		rvs = v.ResourceVersions()
	}
	c, rev := a.src.Snapshot()
	start := time.Now()
	rs, err := a.compiler.Compile(c)
	if err == nil {
		err = a.dp.Sync(ctx, rs)
	}
	// One evaluator index of rs, built on first use, serves the sweep and the flow records.
	var resolver *flow.Resolver
	if err == nil {
		resolver = flow.NewResolverFrom(a.resolver, rs)
		if a.fl != nil {
			err = withStaged(resolver, c)
		}
	}
	var swept int
	if err == nil {
		if s, ok := a.dp.(dataplane.Sweeper); ok {
			if swept, err = s.Sweep(resolver.Evaluator()); err != nil {
				err = fmt.Errorf("sweep denied connections: %w", err)
			}
		}
	}
	took := time.Since(start)
	a.m.syncSeconds.Observe(took.Seconds())
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.SyncCount++
	if err != nil {
		a.m.syncErrors.Inc()
		a.st.LastError, a.st.ErrorRevision = err.Error(), rev
		a.cfg.Logger.Error("sync failed; the previous policy stays in force", "revision", rev, "err", err)
	} else {
		if rev != a.st.Applied {
			a.cfg.Logger.Info("policy in force", "revision", rev, "took", took, "swept", swept)
		}
		a.st.Applied, a.st.ResourceVersion, a.st.ResourceVersions, a.st.LastSync, a.st.LastError, a.st.ErrorRevision = rev, rv, rvs, time.Now(), "", 0
		a.st.LocalPods, a.st.Policies = countLocal(rs, a.cfg.Node), countPolicies(rs)
		gaps := c.Unsupported()
		if g, ok := a.src.(interface{ Gaps() []model.Gap }); ok {
			gaps = append(gaps, g.Gaps()...) // objects of policy kinds rampart does not enforce
		}
		a.reportGaps(gaps)
		a.configureThreat(c)
		if a.hc != nil {
			if err := a.hc.update(rs, a.cfg.Node); err != nil {
				a.cfg.Logger.Warn("Service health checks", "err", err)
			}
		}
		a.resolver = resolver
		if a.fl != nil {
			a.fl.setResolver(resolver)
		}
		a.m.applied.Set(float64(rev))
		a.m.localPods.Set(float64(a.st.LocalPods))
		a.m.policies.Set(float64(a.st.Policies))
		a.m.swept.Add(float64(swept))
		if ec, ok := a.dp.(dataplane.EntryCounter); ok {
			for kind, n := range ec.Entries() {
				a.m.entries.WithLabelValues(kind).Set(float64(n))
			}
		}
		if cr, ok := a.dp.(dataplane.CapacityReporter); ok {
			for kind, n := range cr.Capacities() {
				a.m.capacity.WithLabelValues(kind).Set(float64(n))
			}
		}
	}
	close(a.progress)
	a.progress = make(chan struct{})
	return err
}

// configureThreat gives the threat engine the state just put in force. The caller holds a.mu.
func (a *Agent) configureThreat(c *model.Cluster) {
	td, ferr := a.threatConfig(c)
	fromFile := a.cfg.ThreatFile != "" && c.ThreatDefense == nil
	prevName, prevGen := a.st.Threat.Config, a.st.Threat.Generation
	a.st.Threat.Config, a.st.Threat.Generation = "", 0
	if td != nil {
		a.st.Threat.Config, a.st.Threat.Generation = td.Name, td.Generation
	}
	if td != c.ThreatDefense {
		cc := *c // shallow: the engine only reads
		cc.ThreatDefense = td
		c = &cc
	}
	err := a.th.Configure(c, threat.ProtectedOf(c))
	if err == nil && ferr != nil {
		err = fmt.Errorf("threat config %s: %w; the previous configuration stays in force", a.cfg.ThreatFile, ferr)
	}
	if err != nil {
		if a.st.Threat.Error != err.Error() {
			a.cfg.Logger.Error("threat defense", "err", err)
		}
		a.st.Threat.Error = err.Error()
		return
	}
	if td == nil {
		a.st.Threat.Loaded = time.Time{}
	} else if td.Name != prevName || td.Generation != prevGen || a.st.Threat.Loaded.IsZero() {
		a.st.Threat.Loaded = time.Now()
	}
	a.st.Threat.File = ""
	if fromFile {
		a.st.Threat.File = a.fileSum // the file's content now in force ("" : no file)
	}
	a.st.Threat.Error = ""
}

// Threat is the node's threat-defense engine (its alerts: Threat().Log()).
func (a *Agent) Threat() *threat.Engine { return a.th }

func countLocal(rs *ir.Ruleset, node string) int {
	n := 0
	for i := range rs.Pods {
		if rs.Pods[i].Node == node && !rs.Pods[i].HostNetwork {
			n++
		}
	}
	return n
}

// countPolicies counts policy objects (one with rules in both directions appears in both).
func countPolicies(rs *ir.Ruleset) int {
	type object struct {
		tier      ir.TierKind
		kind      string
		namespace string
		name      string
	}
	seen := map[object]bool{}
	for _, tiers := range rs.Tiers {
		for _, t := range tiers {
			for i := range t.Policies {
				p := &t.Policies[i]
				seen[object{p.Tier, p.Kind, p.Namespace, p.Name}] = true
			}
		}
	}
	return len(seen)
}

// ErrSyncFailed is returned by WaitApplied when the dataplane could not be brought to the
// revision waited for (the previous policy stays in force).
var ErrSyncFailed = errors.New("dataplane sync failed")

// WaitApplied waits until revision rev (or a later one) is in force. It fails with
// ErrSyncFailed as soon as a sync of rev or later has failed, so that a caller can put the
// source back.
func (a *Agent) WaitApplied(ctx context.Context, rev uint64) error {
	for {
		a.mu.Lock()
		st, ch := a.st, a.progress
		a.mu.Unlock()
		if st.Applied >= rev {
			return nil
		}
		if st.LastError != "" && st.ErrorRevision >= rev {
			return fmt.Errorf("node %s: %w: %s", a.cfg.Node, ErrSyncFailed, st.LastError)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node %s: revision %d not in force (at %d): %w", a.cfg.Node, rev, st.Applied, ctx.Err())
		}
	}
}

// Status reports the agent's state, readiness included: ready once a first sync is in force,
// and while the source is connected or has been away for less than DisconnectGrace.
func (a *Agent) Status() Status {
	a.mu.Lock()
	st := a.st
	a.mu.Unlock()
	st.Source = a.src.Status()
	st.Threat.Alerts = a.th.Log().Total()
	st.Threat.Feeds, st.Threat.Refused, st.Threat.Blocks, st.Threat.Limits = a.th.FeedEntries(), len(a.th.Refused()), len(a.th.Blocks()), len(a.th.Limits())
	st.Threat.Quarantined = a.th.Quarantined()
	switch {
	case st.Applied == 0:
		st.Ready, st.Reason = false, "no policy programmed yet"
		if st.LastError != "" {
			st.Reason += ": " + st.LastError
		}
	case !st.Source.Connected && time.Since(st.Source.Since) > a.cfg.DisconnectGrace:
		st.Ready, st.Reason = false, fmt.Sprintf("cluster state source unreachable for %s (enforcing revision %d)", time.Since(st.Source.Since).Round(time.Second), st.Applied)
	default:
		st.Ready, st.Reason = true, ""
	}
	a.m.ready.Set(boolGauge(st.Ready))
	return st
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
