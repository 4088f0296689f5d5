package threat

import (
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// autoQuarantine is a quarantine a detector put on a pod.
type autoQuarantine struct{ since, until time.Time }

// quarantineLocked quarantines the pod at addr (a detector's quarantine response) until now+d
// and reports the response taken. An address that is no pod cannot be quarantined: it is
// blocked instead.
func (e *Engine) quarantineLocked(addr netip.Addr, d time.Duration, now time.Time) string {
	if e.pods[addr] == nil {
		return e.blockLocked(addr, d, now)
	}
	if e.cfg.Quarantiner == nil {
		return "quarantine-unavailable"
	}
	e.quarAuto[addr] = autoQuarantine{since: now, until: now.Add(d)}
	if err := e.pushQuarantineLocked(); err != nil {
		e.cfg.Logger.Error("quarantine", "pod", addr, "err", err)
		return "quarantine-failed"
	}
	return model.ActionQuarantine
}

// quarantinedLocked are the pods under quarantine: those annotated rampart.io/quarantine
// "true", and those a detector quarantined, unless released (rampart.io/released-at) since.
func (e *Engine) quarantinedLocked() []netip.Addr {
	out := slices.Clone(e.marked)
	for a, q := range e.quarAuto {
		if p := e.pods[a]; p != nil && !p.quarantined && !p.releasedAt.After(q.since) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// pushQuarantineLocked gives the kernel the quarantine in force, when it changed.
func (e *Engine) pushQuarantineLocked() error {
	if e.cfg.Quarantiner == nil {
		return nil
	}
	want := dataplane.Quarantine{Pods: e.quarantinedLocked(), Allow: quarantineAllow(e.td)}
	return e.quarSent.push(want, func(a, b dataplane.Quarantine) bool {
		return slices.Equal(a.Pods, b.Pods) && slices.Equal(a.Allow, b.Allow)
	}, e.cfg.Quarantiner.SetQuarantine)
}

// expireQuarantinesLocked lifts the detectors' quarantines whose time is up, and forgets those
// of pods that are gone or were released. It runs every tick: the kernel is asked only when one
// went.
func (e *Engine) expireQuarantinesLocked(now time.Time) {
	changed := false
	for a, q := range e.quarAuto {
		if p := e.pods[a]; p == nil || !now.Before(q.until) || p.releasedAt.After(q.since) {
			delete(e.quarAuto, a)
			changed = true
		}
	}
	if !changed {
		return
	}
	if err := e.pushQuarantineLocked(); err != nil {
		e.cfg.Logger.Error("quarantine", "err", err)
	}
}

func quarantineAllow(td *model.ThreatDefense) []dataplane.PortProtocol {
	var out []dataplane.PortProtocol
	for _, a := range model.QuarantineAllow(td) {
		p := map[corev1.Protocol]ir.Protocol{corev1.ProtocolTCP: ir.TCP, corev1.ProtocolUDP: ir.UDP, corev1.ProtocolSCTP: ir.SCTP}[a.Protocol]
		out = append(out, dataplane.PortProtocol{Protocol: p, Port: uint16(a.Port)})
	}
	return out
}

// Quarantined names the pods under quarantine (annotated or by a detector) as NS/NAME.
func (e *Engine) Quarantined() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, a := range e.quarantinedLocked() {
		out = append(out, e.pods[a].ns+"/"+e.pods[a].name)
	}
	return out
}
