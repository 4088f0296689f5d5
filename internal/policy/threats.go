package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Threats are the threat-defense responses in force that decide packets before any policy, as
// the dataplanes apply them: the blocklist drops every packet from or to a listed address, and
// a quarantined pod sends only to QuarantineAllow's ports (and gets their replies), nothing
// else in or out.
type Threats struct {
	Blocked         []Block
	Quarantined     map[netip.Addr]bool
	QuarantineAllow []PortProto
}

// Block is a blocked prefix and what listed it (a feed's name, or a detector's response).
type Block struct {
	Prefix netip.Prefix
	By     string
}

// Deciders of the threat-defense responses.
const (
	DecidedBlocked    Decider = "blocklist"
	DecidedQuarantine Decider = "quarantine"
)

// WithThreats returns an evaluator that applies t before policy (nil: none).
func (e *Evaluator) WithThreats(t *Threats) *Evaluator {
	c := *e
	c.threats = t
	return &c
}

// block finds the block of a or nil, the longest prefix first (as an LPM lookup does).
func (t *Threats) block(a netip.Addr) *Block {
	var best *Block
	for i := range t.Blocked {
		b := &t.Blocked[i]
		if b.Prefix.Contains(a) && (best == nil || b.Prefix.Bits() > best.Prefix.Bits()) {
			best = b
		}
	}
	return best
}

// applyThreats overrides the sides of d that a threat-defense response decides.
func (e *Evaluator) applyThreats(d *Decision) {
	t := e.threats
	if t == nil {
		return
	}
	for _, end := range []struct {
		ep   Endpoint
		role string
	}{{d.Src, "source"}, {d.Dst, "destination"}} {
		if b := t.block(end.ep.IP); b != nil {
			reason := fmt.Sprintf("the %s %s is in %s, blocked by %s: every packet from or to it is dropped before policy", end.role, end.ep.Describe(), b.Prefix, b.By)
			for _, s := range []*Side{&d.Egress, &d.Ingress} {
				*s = Side{Direction: s.Direction, Subject: s.Subject, Rule: -1, DecidedBy: DecidedBlocked, Reason: reason}
			}
			d.Allowed = false
			return
		}
	}
	f := d.Flow
	if d.Src.Pod != nil && t.Quarantined[f.Src] && !slices.Contains(t.QuarantineAllow, PortProto{Port: f.Port, Protocol: f.Protocol}) {
		d.Egress = Side{Direction: ir.Egress, Subject: d.Src.Pod.Key(), Rule: -1, DecidedBy: DecidedQuarantine,
			Reason: fmt.Sprintf("%s is quarantined (rampart.io/quarantine), and may only reach %s", d.Src.Pod.Key(), allowList(t.QuarantineAllow))}
	}
	if d.Dst.Pod != nil && t.Quarantined[f.Dst] {
		d.Ingress = Side{Direction: ir.Ingress, Subject: d.Dst.Pod.Key(), Rule: -1, DecidedBy: DecidedQuarantine,
			Reason: fmt.Sprintf("%s is quarantined (rampart.io/quarantine): nothing may connect to it", d.Dst.Pod.Key())}
	}
	d.Allowed = d.Egress.Allowed && d.Ingress.Allowed
}

func allowList(ps []PortProto) string {
	if len(ps) == 0 {
		return "nothing"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
