// Package runner runs a function at a bounded frequency: bursts of triggers coalesce into one
// run, runs are at least MinInterval apart, a failed run is retried with exponential backoff,
// and with MaxInterval set the function also runs periodically. The clock is injected, so
// tests move time instead of sleeping. It is the agent's control loop, after Kubernetes'
// BoundedFrequencyRunner (kube-proxy, kube-network-policies).
package runner

import (
	"context"
	"errors"
	"time"

	"k8s.io/utils/clock"
)

// Config bounds how often the function runs.
type Config struct {
	// MinInterval is the least time between the starts of two runs; triggers in between
	// coalesce into one run when it has passed. 0 runs as soon as triggered.
	MinInterval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed run: the first retry comes after
	// RetryMin, each further one after twice the last, at most RetryMax.
	RetryMin, RetryMax time.Duration
	// MaxInterval, if set, runs the function this long after the last run even without a
	// trigger (a periodic resync that repairs state changed behind the agent's back).
	MaxInterval time.Duration
	// Clock defaults to the real one.
	Clock clock.WithTicker
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
}

// Validate reports every inconsistent bound.
func (c *Config) Validate() error {
	var errs []error
	if c.MinInterval < 0 {
		errs = append(errs, errors.New("runner: MinInterval must not be negative"))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("runner: want 0 < RetryMin <= RetryMax"))
	}
	if c.MaxInterval < 0 || c.MaxInterval > 0 && c.MaxInterval < c.MinInterval {
		errs = append(errs, errors.New("runner: MaxInterval must be 0 or at least MinInterval"))
	}
	return errors.Join(errs...)
}

// Runner calls fn when triggered, within its Config's bounds.
type Runner struct {
	fn      func(context.Context) error
	cfg     Config
	trigger chan struct{}
}

// New returns a runner of fn; nothing runs until Run is called and Trigger (or MaxInterval)
// asks for it.
func New(fn func(context.Context) error, cfg Config) (*Runner, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Runner{fn: fn, cfg: cfg, trigger: make(chan struct{}, 1)}, nil
}

// Trigger asks for a run. It never blocks: triggers pending a run are one.
func (r *Runner) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Run is the loop; it returns when ctx is done. fn runs on this goroutine only.
func (r *Runner) Run(ctx context.Context) {
	clk := r.cfg.Clock
	var (
		last  time.Time     // start of the last run; zero before the first
		due   time.Time     // when the next run starts; zero when none is scheduled
		retry time.Duration // the backoff in force, 0 after a success
	)
	for {
		if !due.IsZero() && !clk.Now().Before(due) {
			start := clk.Now()
			err := r.fn(ctx)
			if ctx.Err() != nil {
				return
			}
			last, due = start, time.Time{}
			if err != nil {
				retry = min(max(2*retry, r.cfg.RetryMin), r.cfg.RetryMax)
				due = clk.Now().Add(retry)
			} else {
				retry = 0
				if r.cfg.MaxInterval > 0 {
					due = last.Add(r.cfg.MaxInterval)
				}
			}
			continue
		}
		var timer clock.Timer
		var fire <-chan time.Time
		if !due.IsZero() {
			timer = clk.NewTimer(due.Sub(clk.Now()))
			// The clock may have reached due between reading it and arming the timer; a fake
			// clock never fires a timer armed in the past, so look again before waiting.
			if !clk.Now().Before(due) {
				timer.Stop()
				continue
			}
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-r.trigger:
			at := clk.Now()
			if !last.IsZero() && last.Add(r.cfg.MinInterval).After(at) {
				at = last.Add(r.cfg.MinInterval)
			}
			if due.IsZero() || at.Before(due) {
				due = at
			}
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}
