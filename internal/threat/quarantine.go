package threat

import (
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
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

// InForce is what the engine has the kernel enforce before policy, for the evaluator to
// explain: the blocked prefixes with what blocked each (a feed's name, or the detector response
// that did), the quarantined pods' addresses, and what those may still reach.
type InForce struct {
	Blocks          []BlockedBy
	Quarantined     []netip.Addr
	QuarantineAllow []dataplane.PortProtocol
}

// BlockedBy is a blocked prefix and what blocked it.
type BlockedBy struct {
	Prefix netip.Prefix
	By     string
}

// InForce returns the responses in force now.
func (e *Engine) InForce() InForce {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out InForce
	for _, p := range e.feeds.block {
		by := "a threat feed"
		if i, ok := e.feeds.idx[p.Bits()][p]; ok {
			by = "threat feed " + e.feeds.feeds[i].name
		}
		out.Blocks = append(out.Blocks, BlockedBy{Prefix: p, By: by})
	}
	for p := range e.blocks {
		out.Blocks = append(out.Blocks, BlockedBy{Prefix: p, By: "an automatic block (a detector's response; see the alerts)"})
	}
	slices.SortFunc(out.Blocks, func(a, b BlockedBy) int { return comparePrefix(a.Prefix, b.Prefix) })
	out.Quarantined = e.quarantinedLocked()
	out.QuarantineAllow = quarantineAllow(e.td)
	return out
}

// Threats are the responses a cluster's state puts in force, for the evaluator: its
// ThreatDefense's feeds with action block (files read now; feeds by URL are not fetched, and
// say so through unread) and its quarantined pods (rampart.io/quarantine). Detectors' automatic
// responses happen on the nodes and are not known here. An unreadable feed is an error, as it
// is for the agent. It returns nil when nothing is in force.
func Threats(c *model.Cluster) (t *policy.Threats, unread []string, err error) {
	e := New(Config{})
	if err := e.Configure(c, ProtectedOf(c)); err != nil {
		return nil, nil, err
	}
	if td := c.ThreatDefense; td != nil {
		for _, f := range td.Spec.Feeds {
			if f.URL != "" && f.Action == model.ActionBlock {
				unread = append(unread, f.Name)
			}
		}
	}
	return e.InForce().Threats(), unread, nil
}

// Threats is f for the evaluator; nil when nothing is in force.
func (f InForce) Threats() *policy.Threats {
	if len(f.Blocks) == 0 && len(f.Quarantined) == 0 {
		return nil
	}
	t := &policy.Threats{Quarantined: map[netip.Addr]bool{}}
	for _, b := range f.Blocks {
		t.Blocked = append(t.Blocked, policy.Block{Prefix: b.Prefix, By: b.By})
	}
	for _, a := range f.Quarantined {
		t.Quarantined[a] = true
	}
	for _, a := range f.QuarantineAllow {
		t.QuarantineAllow = append(t.QuarantineAllow, policy.PortProto{Port: a.Port, Protocol: a.Protocol})
	}
	return t
}

// Union is what any of fs has in force (the nodes a flow crosses): every block and quarantine;
// the allowed ports are the configuration's, the same on every node.
func Union(fs ...InForce) InForce {
	var out InForce
	seen := map[netip.Prefix]bool{}
	quar := map[netip.Addr]bool{}
	for _, f := range fs {
		for _, b := range f.Blocks {
			if !seen[b.Prefix] {
				seen[b.Prefix] = true
				out.Blocks = append(out.Blocks, b)
			}
		}
		for _, a := range f.Quarantined {
			if !quar[a] {
				quar[a] = true
				out.Quarantined = append(out.Quarantined, a)
			}
		}
		if out.QuarantineAllow == nil {
			out.QuarantineAllow = f.QuarantineAllow
		}
	}
	return out
}
