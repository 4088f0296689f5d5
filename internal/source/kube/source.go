package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/source"
)

// Options tune a Source.
type Options struct {
	// CRDPoll is how often the API server is asked whether the network-policy-api resources
	// are served, while they are not (default 10s).
	CRDPoll time.Duration
	// HealthPoll is how often the API server's /healthz is checked (default 2s).
	HealthPoll time.Duration
	// UnenforcedPoll is how often the cluster is searched for objects of policy kinds rampart
	// does not enforce (default 1m); a negative one turns the search off (Load asks once,
	// itself).
	UnenforcedPoll time.Duration
	// Resync is the informers' resync period (default none: the watch is the truth).
	Resync time.Duration
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.CRDPoll == 0 {
		o.CRDPoll = 10 * time.Second
	}
	if o.HealthPoll == 0 {
		o.HealthPoll = 2 * time.Second
	}
	if o.UnenforcedPoll == 0 {
		o.UnenforcedPoll = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Source mirrors a cluster through client-go shared informers: Namespaces, Nodes, Pods,
// Services, EndpointSlices and NetworkPolicies always; AdminNetworkPolicies and
// BaselineAdminNetworkPolicies (v1alpha1), and ClusterNetworkPolicies (v1alpha2, which the
// v0.3.0 CRD serves beside v1beta1 with the same schema), once the API server serves them (a
// cluster without the CRDs works, and their informers start when the CRDs appear). managedFields are stripped as
// objects enter the caches. It implements source.Source.
type Source struct {
	*source.Notifier
	api  api
	md   metadata.Interface // lists objects of policy kinds rampart does not enforce; nil: kinds only
	opts Options

	infs     map[string]cache.SharedIndexInformer // the kinds watched from the start, fixed at New
	coreInfs []cache.SharedIndexInformer
	anp      atomic.Pointer[cache.SharedIndexInformer] // nil until the CRDs are served
	banp     atomic.Pointer[cache.SharedIndexInformer]
	cnp      atomic.Pointer[cache.SharedIndexInformer] // nil until the ClusterNetworkPolicy CRD is served

	rev atomic.Uint64
	// kindRV is the highest resourceVersion any event of each kind carried: each informer has
	// its own watch, so one kind's events can arrive ahead of another's, and a barrier on the
	// highest overall alone can pass with an earlier write of another kind still in flight.
	// The map is fixed at New.
	kindRV map[string]*atomic.Uint64
	synced chan struct{}
	// changes counts each kind's events (fixed at New); snaps keeps each kind's last snapshot
	// map with the count it was built at: a kind without events since is handed over as the
	// same map (snapshots are read only), so a policy change does not copy 10,000 pods.
	changes map[string]*atomic.Uint64
	snapMu  sync.Mutex
	snaps   map[string]kindSnap

	mu         sync.Mutex
	status     source.Status
	unenforced []model.Gap // objects of policy kinds rampart does not enforce (watchUnenforced)
}

var _ source.Source = (*Source)(nil)

// newSource returns a source over a.
func newSource(a api, opts Options) *Source {
	opts.defaults()
	s := &Source{Notifier: source.NewNotifier(), api: a, opts: opts, synced: make(chan struct{}),
		status: source.Status{Since: time.Now()}, infs: map[string]cache.SharedIndexInformer{}}
	s.kindRV, s.changes, s.snaps = map[string]*atomic.Uint64{}, map[string]*atomic.Uint64{}, map[string]kindSnap{}
	for _, k := range model.SupportedKinds {
		s.kindRV[k], s.changes[k] = new(atomic.Uint64), new(atomic.Uint64)
	}
	for _, kind := range []string{model.KindNamespace, model.KindNode, model.KindPod, model.KindService, model.KindEndpointSlice, model.KindNetworkPolicy} {
		inf := s.informer(kind)
		s.infs[kind] = inf
		s.coreInfs = append(s.coreInfs, inf)
	}
	return s
}

// informer returns a new informer of kind whose events count as changes; objects are
// stripped (stripManagedFields) before they enter its cache.
func (s *Source) informer(kind string) cache.SharedIndexInformer {
	inf := cache.NewSharedIndexInformer(s.api.listWatch(kind), kindResource[kind].obj, s.opts.Resync, cache.Indexers{})
	_ = inf.SetTransform(stripManagedFields)
	s.watch(kind, inf)
	return inf
}

// RESTConfig reads a kubeconfig ("" for the default rules: $KUBECONFIG, ~/.kube/config,
// in-cluster).
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// NewFromConfig returns a source for the cluster cfg reaches.
func NewFromConfig(cfg *rest.Config, opts Options) (*Source, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "rampart"
	}
	a, err := restAPI(cfg)
	if err != nil {
		return nil, err
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := newSource(a, opts)
	s.md = md
	return s, nil
}

// stripManagedFields drops what no consumer reads before objects enter the caches: every
// object's managedFields and last-applied annotation; pods are cached as model.Pod, which keeps
// what policy, Services and image scans use. On a 10,000-pod cluster the caches are most of the
// agent's memory.
func stripManagedFields(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return model.PodFrom(p), nil
	}
	a, err := meta.Accessor(obj)
	if err != nil {
		return obj, nil
	}
	a.SetManagedFields(nil)
	if ann := a.GetAnnotations(); ann != nil {
		delete(ann, corev1.LastAppliedConfigAnnotation)
	}
	return obj, nil
}

// watch counts every event of inf, the informer of kind, as a change.
func (s *Source) watch(kind string, inf cache.SharedIndexInformer) {
	changed := func(obj any) {
		s.observe(kind, obj)
		// Counted after the informer's cache holds the change (handlers run after it).
		s.changes[kind].Add(1)
		s.rev.Add(1)
		s.Notify()
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, obj any) { changed(obj) },
		DeleteFunc: changed, // a deleted object carries the deletion's resourceVersion
	})
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		if !errors.Is(err, context.Canceled) {
			s.setStatus(false, err)
		}
	})
}

// observe raises the highest resourceVersion seen. resourceVersions are opaque to clients in
// general; with one etcd they are its revision, and the lab uses them only to wait for agents
// to catch up with a write it made.
func (s *Source) observe(kind string, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	a, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	rv, err := strconv.ParseUint(a.GetResourceVersion(), 10, 64)
	if err != nil {
		return
	}
	v := s.kindRV[kind]
	for {
		cur := v.Load()
		if rv <= cur || v.CompareAndSwap(cur, rv) {
			return
		}
	}
}

// ResourceVersion is the highest resourceVersion of any object event seen so far.
func (s *Source) ResourceVersion() uint64 {
	var rv uint64
	for _, v := range s.kindRV {
		rv = max(rv, v.Load())
	}
	return rv
}

// ResourceVersions is the highest resourceVersion seen per kind (kinds with none are left
// out).
func (s *Source) ResourceVersions() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range s.kindRV {
		if rv := v.Load(); rv > 0 {
			out[k] = rv
		}
	}
	return out
}

// Run starts the informers, waits for their first lists, and keeps them (and the check for
// the policy CRDs and the API server's health) running until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	for _, inf := range s.coreInfs {
		go inf.RunWithContext(ctx)
	}
	go s.health(ctx)
	syncs := make([]cache.InformerSynced, 0, len(s.coreInfs))
	for _, inf := range s.coreInfs {
		syncs = append(syncs, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return ctx.Err()
	}
	// The admin policies: enforced from the first sync when served, picked up later otherwise.
	anp, cnp := s.startAdminPolicies(ctx), s.startCNPs(ctx)
	s.setStatus(true, nil)
	s.rev.Add(1)
	close(s.synced)
	s.Notify()
	if s.opts.UnenforcedPoll > 0 {
		go s.watchUnenforced(ctx)
	}
	if !anp || !cnp {
		t := time.NewTicker(s.opts.CRDPoll)
		defer t.Stop()
		for !anp || !cnp {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if !anp {
				if anp = s.startAdminPolicies(ctx); anp {
					s.opts.Logger.Info("AdminNetworkPolicy and BaselineAdminNetworkPolicy are served now: watching them")
					s.rev.Add(1)
					s.Notify()
				}
			}
			if !cnp {
				if cnp = s.startCNPs(ctx); cnp {
					s.opts.Logger.Info("ClusterNetworkPolicy is served now: watching it")
					s.rev.Add(1)
					s.Notify()
				}
			}
		}
	}
	<-ctx.Done()
	return nil
}

// startAdminPolicies starts the ANP and BANP informers if the API server serves both
// resources, and waits for their first list. It reports whether they run.
func (s *Source) startAdminPolicies(ctx context.Context) bool {
	if s.anp.Load() != nil {
		return true
	}
	res, err := s.api.resources(ctx, kindResource[model.KindANP].gv)
	if err != nil {
		return false
	}
	var anp, banp bool
	for _, r := range res.APIResources {
		anp = anp || r.Name == "adminnetworkpolicies"
		banp = banp || r.Name == "baselineadminnetworkpolicies"
	}
	if !anp || !banp {
		return false
	}
	ai, bi := s.informer(model.KindANP), s.informer(model.KindBANP)
	go ai.RunWithContext(ctx)
	go bi.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), ai.HasSynced, bi.HasSynced) {
		return false
	}
	s.anp.Store(&ai)
	s.banp.Store(&bi)
	return true
}

// startCNPs starts the ClusterNetworkPolicy informer (v1alpha2) if the API server serves it,
// and waits for its first list. It reports whether it runs.
func (s *Source) startCNPs(ctx context.Context) bool {
	if s.cnp.Load() != nil {
		return true
	}
	res, err := s.api.resources(ctx, kindResource[model.KindCNP].gv)
	if err != nil {
		return false
	}
	served := false
	for _, r := range res.APIResources {
		served = served || r.Name == "clusternetworkpolicies"
	}
	if !served {
		return false
	}
	ci := s.informer(model.KindCNP)
	go ci.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), ci.HasSynced) {
		return false
	}
	s.cnp.Store(&ci)
	return true
}

// health polls the API server's /healthz: informers retry on their own, but only a probe says
// when the server is back.
func (s *Source) health(ctx context.Context) {
	t := time.NewTicker(s.opts.HealthPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.api.get == nil { // fake clientsets
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, s.opts.HealthPoll)
		_, err := s.api.get(pctx, "/healthz")
		cancel()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-s.synced:
			s.setStatus(err == nil, err)
		default:
		}
	}
}

func (s *Source) setStatus(connected bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if connected != s.status.Connected {
		s.status.Connected, s.status.Since = connected, time.Now()
		if connected {
			s.opts.Logger.Info("API server reachable")
		} else {
			s.opts.Logger.Warn("API server unreachable", "err", err)
		}
	}
	s.status.Err = ""
	if err != nil {
		s.status.Err = err.Error()
	}
}

// Status says whether the API server answers.
func (s *Source) Status() source.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Synced is closed once every informer has listed.
func (s *Source) Synced() <-chan struct{} { return s.synced }

// Snapshot builds a cluster of the cached objects (shared with the caches: read only). The
// revision is read first, so the objects are at least that new. A kind with no event since
// the last snapshot is the same map as in it.
func (s *Source) Snapshot() (*model.Cluster, uint64) {
	rev := s.rev.Load()
	c := model.NewCluster()
	c.Namespaces = snapKind(s, model.KindNamespace, s.infs[model.KindNamespace], func(n *corev1.Namespace) string { return n.Name })
	c.Nodes = snapKind(s, model.KindNode, s.infs[model.KindNode], func(n *corev1.Node) string { return n.Name })
	c.Pods = snapKind(s, model.KindPod, s.infs[model.KindPod], func(p *model.Pod) string { return p.Namespace + "/" + p.Name })
	c.Services = snapKind(s, model.KindService, s.infs[model.KindService], func(v *corev1.Service) string { return v.Namespace + "/" + v.Name })
	c.EndpointSlices = snapKind(s, model.KindEndpointSlice, s.infs[model.KindEndpointSlice],
		func(e *discoveryv1.EndpointSlice) string { return e.Namespace + "/" + e.Name })
	c.NetworkPolicies = snapKind(s, model.KindNetworkPolicy, s.infs[model.KindNetworkPolicy],
		func(p *networkingv1.NetworkPolicy) string { return p.Namespace + "/" + p.Name })
	if inf := s.anp.Load(); inf != nil {
		c.ANPs = snapKind(s, model.KindANP, *inf, func(p *anpv1alpha1.AdminNetworkPolicy) string { return p.Name })
	}
	if inf := s.banp.Load(); inf != nil {
		c.BANPs = snapKind(s, model.KindBANP, *inf, func(p *anpv1alpha1.BaselineAdminNetworkPolicy) string { return p.Name })
	}
	if inf := s.cnp.Load(); inf != nil {
		c.CNPs = snapKind(s, model.KindCNP, *inf, func(p *cnpv1alpha2.ClusterNetworkPolicy) string { return p.Name })
	}
	return c, rev
}

// kindSnap is one kind's last snapshot map (a map[string]*T) and the event count it holds.
type kindSnap struct {
	changes uint64
	m       any
}

// snapKind returns the objects of one informer by key: the last snapshot's map when the kind
// had no event since (the count is read before the cache is listed, so a map never claims
// more than it holds), a new one otherwise.
func snapKind[T any](s *Source, kind string, inf cache.SharedIndexInformer, key func(*T) string) map[string]*T {
	n := s.changes[kind].Load()
	s.snapMu.Lock()
	last, ok := s.snaps[kind]
	s.snapMu.Unlock()
	if ok && last.changes == n {
		if m, ok := last.m.(map[string]*T); ok {
			return m
		}
	}
	objs := inf.GetStore().List()
	m := make(map[string]*T, len(objs))
	for _, o := range objs {
		if v, ok := o.(*T); ok {
			m[key(v)] = v
		}
	}
	s.snapMu.Lock()
	s.snaps[kind] = kindSnap{changes: n, m: m}
	s.snapMu.Unlock()
	return m
}
