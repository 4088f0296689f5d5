package threat

import (
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/model"
)

// synLimit is a SYN rate limit the engine put on a flooded pod.
type synLimit struct {
	until       time.Time
	rate, burst uint32
}

// limitLocked rate-limits new connection attempts toward dst per source (the flood detector's
// rateLimit response) until now+cfg.BlockFor, and reports the response taken.
func (e *Engine) limitLocked(dst netip.Addr, cfg *model.SynFloodDetector, now time.Time) string {
	if e.cfg.Limiter == nil {
		return "rateLimit-unavailable"
	}
	e.limits[dst] = synLimit{until: now.Add(cfg.BlockFor.Duration), rate: uint32(cfg.PerSource), burst: uint32(cfg.Burst)}
	if err := e.pushLimitsLocked(); err != nil {
		e.cfg.Logger.Error("rate limit", "target", dst, "err", err)
		return "rateLimit-failed"
	}
	return model.ActionRateLimit
}

// extendLimitLocked keeps a limit in force while the flood it answers goes on.
func (e *Engine) extendLimitLocked(dst netip.Addr, cfg *model.SynFloodDetector, now time.Time) {
	if l, ok := e.limits[dst]; ok && cfg.Action == model.ActionRateLimit {
		l.until = now.Add(cfg.BlockFor.Duration)
		e.limits[dst] = l
	}
}

// pushLimitsLocked gives the kernel the limits in force, when they changed: the flood
// detector's, and the connection-limit shields' rates (the stricter where both limit a pod).
func (e *Engine) pushLimitsLocked() error {
	if e.cfg.Limiter == nil {
		return nil
	}
	merged := map[netip.Addr]dataplane.SynLimit{}
	for a, l := range e.limits {
		merged[a] = dataplane.SynLimit{Target: a, Rate: l.rate, Burst: l.burst}
	}
	for _, c := range e.connShieldsLocked() {
		l, ok := merged[c.target]
		if !ok || c.rate < l.Rate {
			l.Rate = c.rate
		}
		if !ok || c.burst < l.Burst {
			l.Burst = c.burst
		}
		l.Target = c.target
		merged[c.target] = l
	}
	want := make([]dataplane.SynLimit, 0, len(merged))
	for _, l := range merged {
		want = append(want, l)
	}
	sort.Slice(want, func(i, j int) bool { return want[i].Target.Less(want[j].Target) })
	return e.limited.push(want, slices.Equal, e.cfg.Limiter.SetSynLimits)
}

// connShield is what the connection-limit shields ask for one pod.
type connShield struct {
	target                  netip.Addr
	concurrent, rate, burst uint32
}

// connShieldsLocked are the pods the connection-limit shields select with their limits (the
// first shield selecting a pod sets them), sorted.
func (e *Engine) connShieldsLocked() []connShield {
	var out []connShield
	for a, p := range e.pods {
		if c, ok := e.connShieldOfLocked(a, p); ok {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].target.Less(out[j].target) })
	return out
}

// connShieldOfLocked is what the first connection-limit shield selecting pod p (at a) asks.
func (e *Engine) connShieldOfLocked(a netip.Addr, p *podInfo) (connShield, bool) {
	if e.td == nil || p == nil {
		return connShield{}, false
	}
	for _, s := range e.td.Spec.Shields {
		if s.Name == model.ShieldConnectionLimit && selector(s.NamespaceSelector).Matches(e.nss[p.ns]) && selector(s.Selector).Matches(p.labels) {
			c, r, b := s.ConnectionLimit.Limits()
			return connShield{target: a, concurrent: c, rate: r, burst: b}, true
		}
	}
	return connShield{}, false
}

// pushConnLimitsLocked gives the kernel the connection-limit shields' caps on open
// connections, when they changed.
func (e *Engine) pushConnLimitsLocked() error {
	if e.cfg.ConnLimiter == nil {
		return nil
	}
	var want []dataplane.ConnLimit
	for _, c := range e.connShieldsLocked() {
		want = append(want, dataplane.ConnLimit{Target: c.target, Max: c.concurrent})
	}
	return e.connLimited.push(want, slices.Equal, e.cfg.ConnLimiter.SetConnLimits)
}

// expireLimitsLocked lifts the limits whose time is up.
func (e *Engine) expireLimitsLocked(now time.Time) {
	changed := false
	for a, l := range e.limits {
		if !now.Before(l.until) {
			delete(e.limits, a)
			changed = true
		}
	}
	if changed {
		if err := e.pushLimitsLocked(); err != nil {
			e.cfg.Logger.Error("lift expired rate limits", "err", err)
		}
	}
}

// Limits are the SYN rate limits in force, by target, and when each ends.
func (e *Engine) Limits() map[netip.Addr]time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[netip.Addr]time.Time{}
	for a, l := range e.limits {
		out[a] = l.until
	}
	return out
}
