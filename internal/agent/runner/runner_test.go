package runner

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// harness runs a Runner over a fake clock and records when (in fake time) fn ran.
type harness struct {
	t     *testing.T
	clk   *clocktesting.FakeClock
	r     *Runner
	start time.Time

	mu    sync.Mutex
	runs  []time.Duration // offsets from start
	fails int             // fail this many more runs
	ran   chan struct{}
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, start: time.Unix(1000, 0), ran: make(chan struct{}, 100)}
	h.clk = clocktesting.NewFakeClock(h.start)
	cfg.Clock = h.clk
	r, err := New(func(context.Context) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.runs = append(h.runs, h.clk.Since(h.start))
		h.ran <- struct{}{}
		if h.fails > 0 {
			h.fails--
			return errors.New("injected failure")
		}
		return nil
	}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// waitRun waits (in real time, bounded) for the next run.
func (h *harness) waitRun() {
	h.t.Helper()
	select {
	case <-h.ran:
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no run; runs so far at %v", h.got())
	}
}

// idle waits until the runner is blocked on its timer (it has scheduled a run in the future),
// then checks that nothing ran meanwhile.
func (h *harness) idle() {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !h.clk.HasWaiters() {
		if time.Now().After(deadline) {
			h.t.Fatal("runner never waited on its timer")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-h.ran:
		h.t.Fatalf("unexpected run; runs at %v", h.got())
	default:
	}
}

func (h *harness) got() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.runs...)
}

func (h *harness) want(runs ...time.Duration) {
	h.t.Helper()
	got := h.got()
	if len(got) != len(runs) {
		h.t.Fatalf("runs at %v, want %v", got, runs)
	}
	for i := range got {
		if got[i] != runs[i] {
			h.t.Fatalf("runs at %v, want %v", got, runs)
		}
	}
}

func TestCoalescesWithinMinInterval(t *testing.T) {
	h := newHarness(t, Config{MinInterval: time.Second})
	h.r.Trigger()
	h.waitRun() // the first trigger runs at once
	for range 10 {
		h.r.Trigger() // a burst: one run, a MinInterval after the first
	}
	h.idle()
	h.clk.Step(999 * time.Millisecond)
	h.idle()
	h.clk.Step(time.Millisecond)
	h.waitRun()
	h.want(0, time.Second)
	// Long after, a trigger runs at once again.
	h.clk.Step(10 * time.Second)
	h.r.Trigger()
	h.waitRun()
	h.want(0, time.Second, 11*time.Second)
}

func TestBackoffAfterFailures(t *testing.T) {
	h := newHarness(t, Config{RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond})
	h.fails = 4
	h.r.Trigger()
	h.waitRun() // fails: retry in 100ms
	for _, d := range []time.Duration{100, 200, 400, 400} {
		h.idle()
		h.clk.Step(d*time.Millisecond - time.Millisecond)
		h.idle()
		h.clk.Step(time.Millisecond)
		h.waitRun()
	}
	h.want(0, 100*time.Millisecond, 300*time.Millisecond, 700*time.Millisecond, 1100*time.Millisecond)
	// The last run succeeded: nothing more is scheduled.
	h.clk.Step(time.Hour)
	select {
	case <-h.ran:
		t.Fatalf("ran after success without a trigger: %v", h.got())
	case <-time.After(50 * time.Millisecond):
	}
	// After a success the backoff starts over.
	h.fails = 1
	h.r.Trigger()
	h.waitRun()
	h.idle()
	h.clk.Step(100 * time.Millisecond)
	h.waitRun()
}

func TestMaxIntervalResyncs(t *testing.T) {
	h := newHarness(t, Config{MinInterval: time.Second, MaxInterval: time.Minute})
	h.r.Trigger()
	h.waitRun()
	h.idle()
	h.clk.Step(time.Minute)
	h.waitRun()
	// A trigger sooner than the periodic run brings it forward, but not before MinInterval.
	h.r.Trigger()
	h.idle()
	h.clk.Step(time.Second)
	h.waitRun()
	h.want(0, time.Minute, time.Minute+time.Second)
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"negative min", Config{MinInterval: -1}, false},
		{"retry max below min", Config{RetryMin: time.Second, RetryMax: time.Millisecond}, false},
		{"max below min interval", Config{MinInterval: time.Minute, MaxInterval: time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(func(context.Context) error { return nil }, tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
