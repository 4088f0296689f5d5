// Package whatif answers "what would these policies change?" before they are enforced: it
// builds the cluster with proposed policies added (or in place of its own), and compares the
// reference evaluator's verdicts before and after on observed flows or on every pair of pods,
// naming each flow whose verdict changes and each observed flow the proposal would break.
package whatif

import (
	"fmt"
	"net/netip"
	"sort"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Apply returns c with the proposed policy objects in force: added to (replacing objects of
// the same kind and name), or with replace instead of, c's own policies. A proposal is
// evaluated as enforced whether or not it carries rampart.io/staged: deciding whether to
// enforce it is what the comparison is for. Objects of other kinds are refused.
func Apply(c *model.Cluster, proposed []model.Object, replace bool) (*model.Cluster, error) {
	out := c.Clone()
	if replace {
		empty := model.NewCluster()
		out.NetworkPolicies, out.ANPs, out.BANPs, out.CNPs = empty.NetworkPolicies, empty.ANPs, empty.BANPs, empty.CNPs
	}
	for _, o := range proposed {
		switch o.Kind {
		case model.KindNetworkPolicy, model.KindANP, model.KindBANP, model.KindCNP:
		default:
			return nil, fmt.Errorf("%s %s (%s): a proposal holds only policies (NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy)", o.Kind, o.Ref(), o.File)
		}
		o.Obj = o.Obj.(runtime.Object).DeepCopyObject()
		delete(o.Meta().Annotations, model.StagedAnnotation)
		out.Apply(o)
	}
	return out, nil
}

// Flow is one flow compared: an observed one (from a record) or a pair of pods on a port the
// destination declares.
type Flow struct {
	From     string `json:"from"` // ns/pod, or the address
	To       string `json:"to"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	// Observed: the flow was seen (a record), with this verdict.
	Observed        bool   `json:"observed"`
	ObservedVerdict string `json:"observedVerdict,omitempty"`
	Before          string `json:"before"` // allowed | denied, by the evaluator
	After           string `json:"after"`
	BeforeDecidedBy string `json:"beforeDecidedBy"`
	AfterDecidedBy  string `json:"afterDecidedBy"`
	// Breaks: an observed allowed flow (without records, a pair allowed before) the proposal
	// would deny.
	Breaks bool `json:"breaks"`
}

// Report is a comparison.
type Report struct {
	// Compared counts the flows evaluated; Changed lists those whose verdict changes, and the
	// observed flows that would be denied after (even when the evaluator already denied them
	// before: the records say they were allowed).
	Compared int    `json:"compared"`
	Changed  []Flow `json:"changed"`
	Broken   int    `json:"broken"`
	Opened   int    `json:"opened"` // denied before, allowed after
	Closed   int    `json:"closed"` // allowed before, denied after
	// Unresolved counts records skipped: not allowed or denied, or without addresses.
	Unresolved int `json:"unresolved"`
}

// Compare evaluates flows under before and after. With records, the flows are the records'
// (deduplicated by addresses, port and protocol); without, every ordered pair of distinct pods
// with addresses on each port the destination declares.
func Compare(before, after *model.Cluster, records []flow.Record) (Report, error) {
	rb, err := compile.Compile(before)
	if err != nil {
		return Report{}, fmt.Errorf("the cluster as it is: %w", err)
	}
	ra, err := compile.Compile(after)
	if err != nil {
		return Report{}, fmt.Errorf("the cluster with the proposal: %w", err)
	}
	eb, ea := policy.New(rb), policy.New(ra)
	var rep Report
	check := func(f policy.Flow, observed bool, verdict string) {
		rep.Compared++
		db, da := eb.Verdict(f), ea.Verdict(f)
		breaks := !da.Allowed && (observed && verdict == flow.Allowed || !observed && db.Allowed)
		if db.Allowed == da.Allowed && !breaks {
			return
		}
		switch {
		case db.Allowed && !da.Allowed:
			rep.Closed++
		case !db.Allowed && da.Allowed:
			rep.Opened++
		}
		if breaks {
			rep.Broken++
		}
		rep.Changed = append(rep.Changed, Flow{
			From: name(db.Src), To: name(db.Dst), Port: f.Port, Protocol: f.Protocol.String(),
			Observed: observed, ObservedVerdict: verdict,
			Before: verdictWord(db.Allowed), After: verdictWord(da.Allowed),
			BeforeDecidedBy: decidedBy(db), AfterDecidedBy: decidedBy(da), Breaks: breaks,
		})
	}
	if records != nil {
		// One flow per addresses, port and protocol: observed allowed if any record says so
		// (records of one flow differ when policies changed while it was observed).
		verdicts := map[policy.Flow]string{}
		var order []policy.Flow
		for _, r := range records {
			f, ok := flowOf(r)
			if !ok || (r.Verdict != flow.Allowed && r.Verdict != flow.Denied) {
				rep.Unresolved++
				continue
			}
			v, seen := verdicts[f]
			if !seen {
				order = append(order, f)
			}
			if v != flow.Allowed {
				verdicts[f] = r.Verdict
			}
		}
		for _, f := range order {
			check(f, true, verdicts[f])
		}
	} else {
		pods := rb.Pods
		for i := range pods {
			for j := range pods {
				from, to := &pods[i], &pods[j]
				if i == j || len(from.IPs) == 0 || len(to.IPs) == 0 || to.HostNetwork {
					continue
				}
				for _, pp := range policy.DeclaredPorts(to) {
					check(policy.Flow{Src: from.IP(), Dst: to.IP(), Protocol: pp.Protocol, Port: pp.Port}, false, "")
				}
			}
		}
	}
	sort.SliceStable(rep.Changed, func(i, j int) bool {
		a, b := rep.Changed[i], rep.Changed[j]
		if a.Breaks != b.Breaks {
			return a.Breaks
		}
		if a.From != b.From {
			return a.From < b.From
		}
		if a.To != b.To {
			return a.To < b.To
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Protocol < b.Protocol
	})
	if rep.Changed == nil {
		rep.Changed = []Flow{}
	}
	return rep, nil
}

func flowOf(r flow.Record) (policy.Flow, bool) {
	src, err1 := netip.ParseAddr(r.Source.IP)
	dst, err2 := netip.ParseAddr(r.Destination.IP)
	proto, err3 := ir.ParseProtocol(r.Protocol)
	if err1 != nil || err2 != nil || err3 != nil || r.Destination.Port == 0 {
		return policy.Flow{}, false
	}
	return policy.Flow{Src: src.Unmap(), Dst: dst.Unmap(), Protocol: proto, Port: r.Destination.Port}, true
}

func name(e policy.Endpoint) string {
	if e.Pod != nil && !e.Pod.HostNetwork {
		return e.Pod.Key()
	}
	return e.IP.String()
}

func verdictWord(allowed bool) string {
	if allowed {
		return flow.Allowed
	}
	return flow.Denied
}

// decidedBy names the side that decided a denial, or what allowed the flow.
func decidedBy(d policy.Decision) string {
	side := d.Ingress
	if !d.Egress.Allowed {
		side = d.Egress
	}
	if d.Allowed {
		// The side a rule allowed, ingress first: the one a reader looks for.
		if d.Ingress.DecidedBy != policy.DecidedByRule && d.Egress.DecidedBy == policy.DecidedByRule {
			side = d.Egress
		}
	}
	switch side.DecidedBy {
	case policy.DecidedByRule:
		return fmt.Sprintf("%s %s rule %d (%s)", side.Direction, side.Policy, side.Rule, side.Action)
	case policy.DecidedIsolated:
		return fmt.Sprintf("%s isolation", side.Direction)
	}
	return string(side.DecidedBy)
}
