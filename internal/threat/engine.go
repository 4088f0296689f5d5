package threat

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// Blocker is a dataplane that drops packets from or to a set of prefixes before conntrack and
// policy (dataplane.Blocker has the same method).
type Blocker interface {
	SetBlocked(prefixes []netip.Prefix) error
}

// Config configures an engine.
type Config struct {
	Node string
	// Now is the clock (tests); default time.Now.
	Now    func() time.Time
	Log    *Log
	Logger *slog.Logger
	// Blocker, when set, enforces blocks (feeds with action block, automatic blocks).
	Blocker Blocker
	// Limiter, when set, enforces SYN rate limits (the flood detector's rateLimit).
	Limiter dataplane.SynLimiter
	// Quarantiner, when set, enforces quarantines (annotated pods, detectors' quarantine).
	Quarantiner dataplane.Quarantiner
	// Shielder, when set, enforces shields (spec.shields); ConnLimiter the connection-limit
	// shields' caps on open connections (their rates go to Limiter).
	Shielder    dataplane.Shielder
	ConnLimiter dataplane.ConnLimiter
	// OnAlert, when set, is told of every alert (Kubernetes Events, metrics).
	OnAlert func(Alert)
	// MaxSources bounds the sources tracked by the scan detector (default 65536).
	MaxSources int
}

// Engine runs the detectors of one node.
type Engine struct {
	cfg Config

	mu  sync.Mutex
	td  *model.ThreatDefense // defaulted; nil: threat defense off
	key string               // identity of td's last load (reloads feeds when it changes)
	// protect are the ranges feeds and automatic blocks may not cut off (the cluster's own).
	protect Protected
	// loadedAt is when the feeds were last read (they are read again every spec.feeds[].refresh).
	loadedAt time.Time
	fetch    *fetcher // feeds by URL
	// fetchPending: the configuration in force has feeds by URL not fetched yet (Configure does
	// not fetch); fetchTried is when RefreshFeeds last looked.
	fetchPending bool
	fetchTried   time.Time
	pods         map[netip.Addr]*podInfo
	nss          map[string]labels.Set
	marked       []netip.Addr // pods annotated for quarantine
	// byObject is the last index by pod object: a pod a source hands over again as the same
	// object (an informer's cache does) is not converted again (guarded by idxMu).
	idxMu    sync.Mutex
	byObject map[*model.Pod]indexed
	lastNS   map[string]*corev1.Namespace
	lastIx   clusterIndex

	feeds    feedSet
	decoys   map[netip.Addr]*decoy
	allowNet []netip.Prefix
	allowNS  map[string]bool
	allowSel []selPair

	scans    map[scanKey]*scanState
	floods   map[netip.Addr]*floodState
	blocks   map[netip.Prefix]time.Time    // automatic blocks and when they end
	quiet    map[string]time.Time          // alert key -> no repeat before
	limits   map[netip.Addr]synLimit       // SYN rate limits on flooded pods
	quarAuto map[netip.Addr]autoQuarantine // detectors' quarantines
	// What the kernel was last given of each response.
	blocked  kernelState[[]netip.Prefix]
	limited  kernelState[[]dataplane.SynLimit]
	quarSent kernelState[dataplane.Quarantine]
	shielded kernelState[dataplane.MSSShield]
	// connLimited: the connection-limit shields' caps.
	connLimited kernelState[[]dataplane.ConnLimit]
	recountAt   time.Time // the last recount of open connections
	untrack     uint64    // first contacts not tracked (MaxSources reached)
}

type podInfo struct {
	ns, name, node string
	labels         labels.Set
	quarantined    bool      // annotated rampart.io/quarantine: "true"
	releasedAt     time.Time // rampart.io/released-at
}

type loadedFeed struct {
	name, action string
	entries      int
}

type decoy struct {
	pod    *podInfo
	ports  map[uint16]bool // empty: all
	action string
}

type selPair struct{ ns, pod labels.Selector }

// New returns an engine with threat defense off until Configure gives it a configuration.
func New(cfg Config) *Engine {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = NewLog(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxSources == 0 {
		cfg.MaxSources = 65536
	}
	return &Engine{cfg: cfg, pods: map[netip.Addr]*podInfo{}, scans: map[scanKey]*scanState{},
		floods: map[netip.Addr]*floodState{}, blocks: map[netip.Prefix]time.Time{}, quiet: map[string]time.Time{},
		limits: map[netip.Addr]synLimit{}, quarAuto: map[netip.Addr]autoQuarantine{}, fetch: newFetcher()}
}

// Log is where the engine's alerts go.
func (e *Engine) Log() *Log { return e.cfg.Log }

// Configure takes the cluster's state: who is who (pods, namespaces) and its ThreatDefense.
// When the ThreatDefense is new or was applied again, every feed file is read again; if one
// cannot be read the previous configuration stays in force and the error says why. Feeds by URL
// are not fetched here (the caller's sync must not wait on a network): they keep the entries
// last fetched from their URL, and the next RefreshFeeds fetches them.
func (e *Engine) Configure(c *model.Cluster, protect Protected) error {
	ix := e.index(c)
	td := c.ThreatDefense
	key := ""
	if td != nil {
		b, _ := json.Marshal(struct {
			Gen, RV string
			Spec    model.ThreatDefenseSpec
		}{fmt.Sprint(td.Generation), td.ResourceVersion, td.Spec})
		key = td.Name + "\x00" + string(b)
	}
	e.mu.Lock()
	reload := key != e.key
	e.protect = protect
	e.mu.Unlock()
	var feeds feedSet
	pending := false
	if reload && td != nil {
		var err error
		if feeds, pending, err = e.loadFeeds(td, false); err != nil {
			e.mu.Lock()
			e.pods, e.nss, e.marked = ix.pods, ix.nss, ix.marked
			e.mu.Unlock()
			return fmt.Errorf("ThreatDefense %s: %w; the previous configuration stays in force", td.Name, err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pods, e.nss, e.marked = ix.pods, ix.nss, ix.marked
	if reload {
		// A new configuration answers anew: what the last one kept quiet is reported again.
		e.quiet = map[string]time.Time{}
		e.key, e.td, e.loadedAt = key, td, e.cfg.Now()
		e.feeds, e.fetchPending, e.fetchTried = feeds, pending, time.Time{}
		for _, r := range feeds.refused {
			e.cfg.Logger.Warn("threat feed entry refused: it would cut the cluster off", "prefix", r.Prefix, "why", r.Why)
		}
		if td == nil {
			e.scans, e.floods, e.blocks = map[scanKey]*scanState{}, map[netip.Addr]*floodState{}, map[netip.Prefix]time.Time{}
			e.limits, e.quarAuto = map[netip.Addr]synLimit{}, map[netip.Addr]autoQuarantine{}
		}
	}
	e.resolveLocked()
	// Quarantines follow the pods' annotations (and their release), with or without a
	// ThreatDefense.
	// The shields follow the pods they select; each push is skipped when nothing changed.
	err := errors.Join(e.pushQuarantineLocked(), e.pushShieldsLocked(), e.pushLimitsLocked(), e.pushConnLimitsLocked())
	if !reload && !e.blocked.failed {
		return err // the blocks change with the feeds, or with Observe and Tick
	}
	return errors.Join(err, e.pushBlocksLocked())
}

// feedSet is what the feeds of one configuration loaded.
type feedSet struct {
	feeds   []loadedFeed
	idx     prefixIndex    // prefix -> index in feeds (the first feed listing it)
	block   []netip.Prefix // the prefixes whose feed has action block, sorted
	refused []Refused
}

// loadFeeds reads td's feeds. With fetch false, a feed by URL is not fetched (Configure runs in
// the agent's sync, which must not wait on a network): it gets the entries last fetched from
// that URL, if any, and pending says the next RefreshFeeds must fetch it.
func (e *Engine) loadFeeds(td *model.ThreatDefense, fetch bool) (fs feedSet, pending bool, err error) {
	fs = feedSet{idx: prefixIndex{}}
	var errs []error
	for i := range td.Spec.Feeds {
		f := &td.Spec.Feeds[i]
		var ps []netip.Prefix
		var err error
		if f.URL != "" && !fetch {
			ps, pending = e.fetch.last(f), true
		} else {
			ps, _, err = e.fetch.load(f)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.feeds[%d]: %w", i, err))
			continue
		}
		ps, ref := e.protect.Filter(ps)
		fs.refused = append(fs.refused, ref...)
		for _, p := range ps {
			if fs.idx.add(p, len(fs.feeds)) && f.Action == model.ActionBlock {
				fs.block = append(fs.block, p)
			}
		}
		fs.feeds = append(fs.feeds, loadedFeed{name: f.Name, action: f.Action, entries: len(ps)})
	}
	sortPrefixes(fs.block)
	return fs, pending, errors.Join(errs...)
}

// Refused are the feed entries of the configuration in force that were not loaded.
func (e *Engine) Refused() []Refused {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.feeds.refused
}

// FeedEntries reports how many entries each loaded feed has.
func (e *Engine) FeedEntries() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for _, f := range e.feeds.feeds {
		out[f.name] = f.entries
	}
	return out
}

// clusterIndex is what the engine looks pods and namespaces up in.
type clusterIndex struct {
	pods   map[netip.Addr]*podInfo
	nss    map[string]labels.Set
	marked []netip.Addr // annotated for quarantine, in order
}

// indexed is one pod object's entry.
type indexed struct {
	info *podInfo
	ips  []netip.Addr
}

func (e *Engine) index(c *model.Cluster) clusterIndex {
	e.idxMu.Lock()
	defer e.idxMu.Unlock()
	if e.sameObjects(c) {
		return e.lastIx // nothing the index holds changed (a policy change)
	}
	ix := clusterIndex{pods: make(map[netip.Addr]*podInfo, len(c.Pods)), nss: make(map[string]labels.Set, len(c.Namespaces))}
	byObject := make(map[*model.Pod]indexed, len(c.Pods))
	for _, p := range c.Pods {
		if p.Spec.HostNetwork {
			continue
		}
		x, ok := e.byObject[p]
		if !ok {
			x = indexed{info: &podInfo{ns: p.Namespace, name: p.Name, node: p.Spec.NodeName, labels: labels.Set(p.Labels),
				quarantined: model.IsQuarantined(p), releasedAt: model.ReleasedAt(p)}, ips: podIPs(p)}
		}
		byObject[p] = x
		for _, ip := range x.ips {
			ix.pods[ip] = x.info
			if x.info.quarantined {
				ix.marked = append(ix.marked, ip)
			}
		}
	}
	e.byObject = byObject
	for name, ns := range c.Namespaces {
		ix.nss[name] = labels.Set(ns.Labels)
	}
	slices.SortFunc(ix.marked, netip.Addr.Compare)
	ix.marked = slices.Compact(ix.marked)
	e.lastNS, e.lastIx = c.Namespaces, ix
	return ix
}

// sameObjects says whether c holds exactly the pod and namespace objects the last index was
// built from. The caller holds idxMu.
func (e *Engine) sameObjects(c *model.Cluster) bool {
	if e.lastIx.pods == nil || len(c.Namespaces) != len(e.lastNS) {
		return false
	}
	n := 0
	for _, p := range c.Pods {
		if _, ok := e.byObject[p]; !ok && !p.Spec.HostNetwork {
			return false
		}
		if !p.Spec.HostNetwork {
			n++
		}
	}
	if n != len(e.byObject) {
		return false
	}
	for name, ns := range c.Namespaces {
		if e.lastNS[name] != ns {
			return false
		}
	}
	return true
}

func podIPs(p *model.Pod) []netip.Addr {
	var out []netip.Addr
	for _, s := range append([]corev1.PodIP{{IP: p.Status.PodIP}}, p.Status.PodIPs...) {
		if a, err := netip.ParseAddr(s.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// resolveLocked turns the configuration's selectors into addresses (decoys, allowlist).
func (e *Engine) resolveLocked() {
	e.decoys, e.allowNet, e.allowNS, e.allowSel = map[netip.Addr]*decoy{}, nil, map[string]bool{}, nil
	if e.td == nil {
		return
	}
	for _, h := range e.td.Spec.Honeypots {
		ports := map[uint16]bool{}
		for _, p := range h.Ports {
			ports[uint16(p)] = true
		}
		nsSel, podSel := selector(h.NamespaceSelector), selector(h.PodSelector)
		for ip, p := range e.pods {
			match := h.Pod != "" && p.ns == h.Namespace && p.name == h.Pod
			if h.Pod == "" {
				match = (h.Namespace == "" || p.ns == h.Namespace) && nsSel.Matches(e.nss[p.ns]) && podSel.Matches(p.labels)
			}
			if match {
				e.decoys[ip] = &decoy{pod: p, ports: ports, action: h.Action}
			}
		}
	}
	for _, a := range e.td.Spec.Allowlist {
		switch {
		case a.CIDR != "":
			if p, err := parsePrefix(a.CIDR); err == nil {
				e.allowNet = append(e.allowNet, p)
			}
		case a.Namespace != "":
			e.allowNS[a.Namespace] = true
		default:
			e.allowSel = append(e.allowSel, selPair{selector(a.NamespaceSelector), selector(a.PodSelector)})
		}
	}
}

// selector is nil-tolerant: a missing selector selects everything.
func selector(s *metav1.LabelSelector) labels.Selector {
	if s == nil {
		return labels.Everything()
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return labels.Nothing() // validated on decode; never here
	}
	return sel
}

func (e *Engine) allowedLocked(src netip.Addr) bool {
	for _, p := range e.allowNet {
		if p.Contains(src) {
			return true
		}
	}
	p := e.pods[src]
	if p == nil {
		return false
	}
	if e.allowNS[p.ns] {
		return true
	}
	for _, s := range e.allowSel {
		if s.ns.Matches(e.nss[p.ns]) && s.pod.Matches(p.labels) {
			return true
		}
	}
	return false
}

// party names an address.
func (e *Engine) partyLocked(a netip.Addr) Party {
	p := Party{IP: a.String()}
	if pi := e.pods[a]; pi != nil {
		p.Namespace, p.Pod = pi.ns, pi.name
	}
	return p
}

// Observe takes one dataplane event. Each source is judged by one node: a pod's by its own
// node (its egress passes there, denied or not, whatever it aims at), any other source's by
// the node of the pod it reaches.
func (e *Engine) Observe(ev flow.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.td == nil {
		return
	}
	src, dst := ev.Tuple.Src.Addr(), ev.Tuple.Dst.Addr()
	now := ev.Time
	if now.IsZero() {
		now = e.cfg.Now()
	}
	// Floods are counted per local target, whoever sends them, on the ingress side only (a
	// connection between two local pods is also seen on its way out).
	if ev.Direction == ir.Ingress && ev.Tuple.Protocol == ir.TCP && ev.TCPFlags&(flow.FlagSYN|flow.FlagACK) == flow.FlagSYN {
		if tp := e.pods[dst]; tp != nil && tp.node == e.cfg.Node && e.synFloodCfg(dst) != nil {
			f := e.floods[dst]
			if f == nil {
				f = &floodState{since: now, sources: map[netip.Addr]int{}}
				e.floods[dst] = f
			}
			f.count++
			f.sources[src]++
			if ev.Drop == flow.DropSynLimit {
				f.limited++
			}
			if f.first.IsZero() {
				f.first = now
			}
			f.last = now
		}
	}
	// A shield drops at the target's node only: that node reports it, whoever sent it.
	if ev.Drop == flow.DropShield || ev.Drop == flow.DropConnLimit {
		e.shieldLocked(ev, now)
		return
	}
	if sp := e.pods[src]; sp != nil {
		if sp.node != e.cfg.Node {
			return
		}
	} else if ev.Direction != ir.Ingress {
		return
	}
	e.feedLocked(ev, now)
	if d := e.decoys[dst]; d != nil && (len(d.ports) == 0 || d.ports[ev.Tuple.Dst.Port()]) && attempt(ev) {
		e.honeypotLocked(ev, d, now)
	}
	if e.allowedLocked(src) {
		return
	}
	if s := e.portScanCfg(dst); s != nil {
		e.scanLocked(ev, s, now)
	}
}

// attempt reports whether an event is an attempt to reach its destination: not a TCP packet
// that answers or acknowledges (RST or ACK set). A source's kernel answers a decoy's
// retransmitted SYN-ACK with a RST long after the source gave up; taken for an attempt, it would
// quarantine the source again after its release.
func attempt(ev flow.Event) bool {
	return ev.Tuple.Protocol != ir.TCP || ev.TCPFlags&(flow.FlagRST|flow.FlagACK) == 0
}

// detectorsFor returns the detectors for a target: the first override naming its namespace,
// else the spec's.
func (e *Engine) detectorsFor(dst netip.Addr) *model.Detectors {
	if p := e.pods[dst]; p != nil {
		for i := range e.td.Spec.Overrides {
			o := &e.td.Spec.Overrides[i]
			if o.Namespace == p.ns || (o.NamespaceSelector != nil && selector(o.NamespaceSelector).Matches(e.nss[p.ns])) {
				return &o.Detectors
			}
		}
	}
	return &e.td.Spec.Detectors
}

func (e *Engine) portScanCfg(dst netip.Addr) *model.PortScanDetector {
	return e.detectorsFor(dst).PortScan
}

func (e *Engine) synFloodCfg(dst netip.Addr) *model.SynFloodDetector {
	return e.detectorsFor(dst).SynFlood
}

// raise publishes an alert unless one with the same key was raised within quiet ("": no key).
func (e *Engine) raiseLocked(key string, quiet time.Duration, now time.Time, a Alert) bool {
	if key != "" {
		if until, ok := e.quiet[key]; ok && now.Before(until) {
			return false
		}
		e.quiet[key] = now.Add(quiet)
	}
	a.Time, a.Node = e.cfg.Now(), e.cfg.Node
	e.cfg.Log.Add(a)
	e.cfg.Logger.Warn("threat detected", "type", a.Type, "source", a.Source.IP, "target", a.Target.IP, "response", a.Response, "message", a.Message)
	if e.cfg.OnAlert != nil {
		e.cfg.OnAlert(a)
	}
	return true
}

// blockLocked adds an automatic block of addr until now+d and reports the response taken.
func (e *Engine) blockLocked(addr netip.Addr, d time.Duration, now time.Time) string {
	if e.cfg.Blocker == nil {
		return "block-unavailable"
	}
	for _, r := range e.protect.Nodes {
		if r == addr {
			return "block-refused" // never cut a node off
		}
	}
	e.blocks[netip.PrefixFrom(addr, addr.BitLen())] = now.Add(d)
	if err := e.pushBlocksLocked(); err != nil {
		e.cfg.Logger.Error("block", "address", addr, "err", err)
		return "block-failed"
	}
	return model.ActionBlock
}

// pushBlocksLocked gives the kernel the blocked prefixes: the feeds with action block and the
// automatic blocks in force.
func (e *Engine) pushBlocksLocked() error {
	if e.cfg.Blocker == nil {
		return nil
	}
	want := append([]netip.Prefix(nil), e.feeds.block...)
	for p := range e.blocks {
		want = append(want, p)
	}
	sortPrefixes(want)
	return e.blocked.push(want, slices.Equal, e.cfg.Blocker.SetBlocked)
}

func sortPrefixes(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool { return comparePrefix(ps[i], ps[j]) < 0 })
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Tick runs the periodic work at now: flood rates, expiry of blocks, scan windows and quiet
// periods. The agent calls it every TickInterval.
func (e *Engine) Tick(now time.Time) {
	e.mu.Lock()
	recount := e.tickLocked(now)
	e.mu.Unlock()
	if recount != nil { // outside the lock: it walks the kernel's flow table
		if err := recount.RecountConns(); err != nil {
			e.cfg.Logger.Error("recount connections", "err", err)
		}
	}
}

// connRecounter is a ConnLimiter that recounts open connections from its own flow table
// (the eBPF dataplane; iptables' connlimit asks conntrack at every SYN).
type connRecounter interface {
	RecountConns() error
}

// RecountEvery is how often the connection-limit shield's counts are recounted while limits
// are in force.
const RecountEvery = 5 * time.Second

// tickLocked does Tick's work and returns the dataplane to recount connections with, when it
// is time to.
func (e *Engine) tickLocked(now time.Time) connRecounter {
	if e.td == nil {
		return nil
	}
	e.floodTickLocked(now)
	e.scanExpireLocked(now)
	e.expireLimitsLocked(now)
	e.expireQuarantinesLocked(now)
	changed := false
	for p, until := range e.blocks {
		if !now.Before(until) {
			delete(e.blocks, p)
			changed = true
		}
	}
	if changed {
		if err := e.pushBlocksLocked(); err != nil {
			e.cfg.Logger.Error("lift expired blocks", "err", err)
		}
	}
	for k, until := range e.quiet {
		if !now.Before(until) {
			delete(e.quiet, k)
		}
	}
	if rc, ok := e.cfg.ConnLimiter.(connRecounter); ok && len(e.connLimited.sent) > 0 && now.Sub(e.recountAt) >= RecountEvery {
		e.recountAt = now
		return rc
	}
	return nil
}

// RefreshFeeds reads the feeds again when the shortest refresh interval has passed since they
// were last read (at now), or at once when feeds by URL of a new configuration have not been
// fetched yet (retried every pendingRetry while that fails). A feed that cannot be read keeps
// the entries in force.
func (e *Engine) RefreshFeeds(now time.Time) error {
	e.mu.Lock()
	td, key := e.td, e.key
	due := false
	if td != nil {
		for _, f := range td.Spec.Feeds {
			due = due || now.Sub(e.loadedAt) >= f.Refresh.Duration
		}
		// Feeds by URL not fetched yet (a new configuration) are fetched at once, and tried
		// again every pendingRetry while they fail.
		if e.fetchPending && now.Sub(e.fetchTried) >= pendingRetry {
			due, e.fetchTried = true, now
		}
	}
	e.mu.Unlock()
	if !due {
		return nil
	}
	feeds, _, err := e.loadFeeds(td, true)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		if !e.fetchPending {
			e.loadedAt = now // a failed read is tried again at the next refresh, not at every tick
		}
		return fmt.Errorf("ThreatDefense %s: refresh: %w; the entries read before stay in force", td.Name, err)
	}
	if e.key != key {
		return nil // reconfigured meanwhile
	}
	e.feeds, e.loadedAt, e.fetchPending = feeds, now, false
	return e.pushBlocksLocked()
}

// pendingRetry is how soon a feed by URL that could not be fetched for a new configuration is
// tried again.
const pendingRetry = 30 * time.Second

// TickInterval is how often Tick should run.
const TickInterval = 500 * time.Millisecond

// Blocks are the automatic blocks in force and when each ends.
func (e *Engine) Blocks() map[netip.Prefix]time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[netip.Prefix]time.Time{}
	for p, t := range e.blocks {
		out[p] = t
	}
	return out
}
