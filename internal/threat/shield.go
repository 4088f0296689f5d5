package threat

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/model"
)

// Shield names and what they enforce.
const (
	// ShieldSackPanic drops TCP SYNs (and SYN-ACKs) with an MSS option below SackPanicMinMSS
	// toward the selected pods (CVE-2019-11477/11478/11479, the advisory's mitigation).
	ShieldSackPanic = "sack-panic"
	SackPanicMinMSS = 500
)

// shieldedLocked are the pods the sack-panic shields select, sorted.
func (e *Engine) shieldedLocked() []netip.Addr {
	if e.td == nil {
		return nil
	}
	var out []netip.Addr
	for a, p := range e.pods {
		for _, s := range e.td.Spec.Shields {
			if s.Name == ShieldSackPanic && selector(s.NamespaceSelector).Matches(e.nss[p.ns]) && selector(s.Selector).Matches(p.labels) {
				out = append(out, a)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// pushShieldsLocked gives the kernel the shields in force, when they changed.
func (e *Engine) pushShieldsLocked() error {
	if e.cfg.Shielder == nil {
		return nil
	}
	want := dataplane.MSSShield{Pods: e.shieldedLocked()}
	if len(want.Pods) > 0 {
		want.Min = SackPanicMinMSS
	}
	return e.shielded.push(want, func(a, b dataplane.MSSShield) bool {
		return a.Min == b.Min && slices.Equal(a.Pods, b.Pods)
	}, e.cfg.Shielder.SetMSSShield)
}

// shieldLocked alerts on a shield's drop (a sample of them: the kernel reports a few).
func (e *Engine) shieldLocked(ev flow.Event, now time.Time) {
	src, dst := ev.Tuple.Src.Addr(), ev.Tuple.Dst.Addr()
	msg := fmt.Sprintf("%s sent a TCP SYN with an MSS below %d to %s: dropped by the %s shield (CVE-2019-11477)",
		describe(e.partyLocked(src)), SackPanicMinMSS, describe(e.partyLocked(dst)), ShieldSackPanic)
	if ev.Drop == flow.DropConnLimit {
		c, _ := e.connShieldOfLocked(dst, e.pods[dst]) // one pod's, not every pod's: per drop event
		limit := c.concurrent
		msg = fmt.Sprintf("%s holds %d open TCP connections to %s, its limit: a new one was dropped by the %s shield",
			describe(e.partyLocked(src)), limit, describe(e.partyLocked(dst)), model.ShieldConnectionLimit)
	}
	e.raiseLocked(fmt.Sprintf("shield/%s/%s/%s", ev.Drop, src, dst), time.Minute, now, Alert{
		Type: TypeShield, Severity: "high", Source: e.partyLocked(src), Target: e.partyLocked(dst), Response: "drop",
		Evidence: Evidence{Count: 1, Protocol: ev.Tuple.Protocol.String(), Ports: []uint16{ev.Tuple.Dst.Port()}, FirstSeen: now, LastSeen: now},
		Message:  msg,
	})
}
