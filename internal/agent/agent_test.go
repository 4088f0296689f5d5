package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-sec/rampart/internal/agent/runner"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/source"
	"github.com/rampart-sec/rampart/internal/source/store"
)

// fakePlane records what it was asked to enforce and fails while told to.
type fakePlane struct {
	mu       sync.Mutex
	fail     error
	synced   []*ir.Ruleset
	sweeps   int
	released bool
}

func (f *fakePlane) Sync(_ context.Context, rs *ir.Ruleset) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.synced = append(f.synced, rs)
	return nil
}
func (f *fakePlane) Close() error { return nil }
func (f *fakePlane) Sweep(*policy.Evaluator) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweeps++
	return 1, nil
}
func (f *fakePlane) Release() error { f.mu.Lock(); f.released = true; f.mu.Unlock(); return nil }
func (f *fakePlane) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}
func (f *fakePlane) last() *ir.Ruleset {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.synced) == 0 {
		return nil
	}
	return f.synced[len(f.synced)-1]
}

// flakySource is a store whose connection status the test sets.
type flakySource struct {
	*store.Store
	mu sync.Mutex
	st source.Status
}

func (f *flakySource) Status() source.Status { f.mu.Lock(); defer f.mu.Unlock(); return f.st }
func (f *flakySource) set(connected bool, since time.Time) {
	f.mu.Lock()
	f.st = source.Status{Connected: connected, Since: since}
	f.mu.Unlock()
}

func cluster() *model.Cluster {
	c := model.NewCluster()
	c.Namespaces["shop"] = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{model.NamespaceNameLabel: "shop"}}}
	for i, name := range []string{"web", "db"} {
		node := "n1"
		if i == 1 {
			node = "n2"
		}
		c.Pods["shop/"+name] = model.PodFrom(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}},
			Status:     corev1.PodStatus{PodIP: "10.0.0." + string(rune('1'+i)), PodIPs: []corev1.PodIP{{IP: "10.0.0." + string(rune('1'+i))}}},
		})
	}
	return c
}

func denyAll(c *model.Cluster) error {
	c.NetworkPolicies["shop/deny"] = &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deny"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}
	return nil
}

func start(t *testing.T, src source.Source, dp *fakePlane, cfg Config) (*Agent, context.CancelFunc, chan error) {
	t.Helper()
	cfg.Node = "n1"
	cfg.Runner = runner.Config{RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond}
	a, err := New(cfg, src, dp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a, cancel, done
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConvergesAndReportsRevisions(t *testing.T) {
	s := store.New(cluster())
	dp := &fakePlane{}
	a, _, _ := start(t, s, dp, Config{})
	ctx := waitCtx(t)
	_, rev := s.Snapshot()
	if err := a.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	if !st.Ready || st.Applied != rev || st.LocalPods != 1 || st.Policies != 0 {
		t.Fatalf("status after the first sync: %+v", st)
	}
	rev, _ = s.Update(denyAll)
	if err := a.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	rs := dp.last()
	if len(rs.Tiers[ir.Ingress]) == 0 || a.Status().Policies != 1 {
		t.Fatalf("the policy did not reach the dataplane: %+v", a.Status())
	}
	if dp.sweeps < 2 {
		t.Errorf("%d sweeps, want one per sync", dp.sweeps)
	}
}

func TestFailedSyncKeepsPolicyAndRetries(t *testing.T) {
	s := store.New(cluster())
	dp := &fakePlane{}
	a, _, _ := start(t, s, dp, Config{})
	ctx := waitCtx(t)
	_, rev0 := s.Snapshot()
	if err := a.WaitApplied(ctx, rev0); err != nil {
		t.Fatal(err)
	}
	dp.setFail(errors.New("injected: kernel said no"))
	rev, _ := s.Update(denyAll)
	err := a.WaitApplied(ctx, rev)
	if !errors.Is(err, ErrSyncFailed) || !strings.Contains(err.Error(), "kernel said no") {
		t.Fatalf("WaitApplied of a failing revision: %v", err)
	}
	st := a.Status()
	if st.Applied != rev0 || st.LastError == "" || !st.Ready {
		t.Fatalf("after a failure: %+v (the previous revision stays, the agent stays ready)", st)
	}
	// Retried with backoff, and converges once the dataplane works again.
	dp.setFail(nil)
	deadline := time.Now().Add(10 * time.Second)
	for a.Status().Applied != rev {
		if time.Now().After(deadline) {
			t.Fatalf("not retried: %+v", a.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a.Status().LastError != "" {
		t.Error("the error stays after a success")
	}
	body := scrape(t, a.MetricsHandler())
	for _, want := range []string{"rampart_dataplane_sync_errors_total 1", "rampart_dataplane_sync_seconds_count", "rampart_applied_revision " + itoa(rev), "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestReadiness(t *testing.T) {
	src := &flakySource{Store: store.New(cluster())}
	src.set(true, time.Now())
	dp := &fakePlane{}
	dp.setFail(errors.New("not yet"))
	a, cancel, done := start(t, src, dp, Config{DisconnectGrace: time.Minute})
	h := a.HealthHandler()
	if code := get(h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before any policy is programmed: %d", code)
	}
	if code := get(h, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	dp.setFail(nil)
	_, rev := src.Snapshot()
	ctx := waitCtx(t)
	for a.WaitApplied(ctx, rev) != nil && ctx.Err() == nil {
	}
	if code := get(h, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after the first sync: %d", code)
	}
	src.set(false, time.Now().Add(-30*time.Second)) // within the grace period
	if code := get(h, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz 30s into an outage (grace 1m): %d", code)
	}
	src.set(false, time.Now().Add(-2*time.Minute))
	if code := get(h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz 2m into an outage: %d", code)
	}
	// Stopping leaves enforcement in force.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the cleanup
	if !dp.released {
		t.Error("the dataplane was not released on stop")
	}
}

func get(h http.Handler, path string) int {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// gapSource is a store that also reports policy objects of kinds rampart does not enforce,
// as the Kubernetes source does.
type gapSource struct {
	*store.Store
	gaps []model.Gap
}

func (g *gapSource) Gaps() []model.Gap { return g.gaps }

// Objects of policy kinds rampart does not enforce are reported like unenforced fields: in the
// status, once to the OnUnenforced hook (Events), and in the metric.
func TestReportsUnenforcedObjects(t *testing.T) {
	gap := model.Gap{APIVersion: "cilium.io/v2", Kind: "CiliumNetworkPolicy", Namespace: "shop", Name: "l7", Msg: "rampart does not enforce this policy kind"}
	s := &gapSource{Store: store.New(cluster()), gaps: []model.Gap{gap}}
	var mu sync.Mutex
	var told []model.Gap
	a, _, _ := start(t, s, &fakePlane{}, Config{OnUnenforced: func(g model.Gap) { mu.Lock(); told = append(told, g); mu.Unlock() }})
	ctx := waitCtx(t)
	_, rev := s.Snapshot()
	if err := a.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	rev, _ = s.Update(denyAll) // a second sync: told once, listed still
	if err := a.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	want := "cilium.io/v2 CiliumNetworkPolicy shop/l7: rampart does not enforce this policy kind"
	if st := a.Status(); len(st.Unenforced) != 1 || st.Unenforced[0] != want {
		t.Errorf("status unenforced %q, want [%q]", st.Unenforced, want)
	}
	mu.Lock()
	if len(told) != 1 || told[0] != gap {
		t.Errorf("OnUnenforced told %v, want the gap once", told)
	}
	mu.Unlock()
	if body := scrape(t, a.MetricsHandler()); !strings.Contains(body, "rampart_unenforced_policy_fields 1") {
		t.Errorf("metric:\n%s", body)
	}
}
