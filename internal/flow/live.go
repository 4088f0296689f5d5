package flow

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Live is a live explanation: the evaluator's decision for a flow beside what the dataplanes
// recorded for connections matching it.
type Live struct {
	Decision policy.Decision `json:"decision"`
	Records  []LiveRecord    `json:"records"`
	// Disagreements counts records of the state in force whose verdict or deciding policy
	// differs from the evaluator.
	Disagreements int `json:"disagreements"`
	// Since is when the state explained came into force.
	Since time.Time `json:"since"`
}

// LiveRecord is one record and whether it agrees with the evaluator.
type LiveRecord struct {
	Record Record `json:"record"`
	Agrees bool   `json:"agrees"`
	Why    string `json:"why,omitempty"` // what differs
	// Earlier: the connection began before the state in force, which decided it; a difference
	// is expected then, and not counted.
	Earlier bool `json:"earlier,omitempty"`
}

// ExplainLive decides f with ev (the state in force since since) and compares every record
// of recs that matches f (source and destination address, protocol, destination port).
func ExplainLive(ev *policy.Evaluator, since time.Time, f policy.Flow, recs []Record) Live {
	l := Live{Decision: ev.Verdict(f), Records: []LiveRecord{}, Since: since}
	for _, r := range recs {
		if !matchesFlow(&r, f) {
			continue
		}
		lr := LiveRecord{Record: r, Earlier: r.FirstSeen.Before(since)}
		lr.Why = compare(&l.Decision, &r)
		lr.Agrees = lr.Why == ""
		if !lr.Agrees && !lr.Earlier {
			l.Disagreements++
		}
		l.Records = append(l.Records, lr)
	}
	return l
}

func matchesFlow(r *Record, f policy.Flow) bool {
	return r.Source.IP == f.Src.String() && r.Destination.IP == f.Dst.String() && r.Destination.Port == f.Port &&
		strings.EqualFold(r.Protocol, f.Protocol.String())
}

// compare says how a record differs from the side of the decision it reports ("" if not).
func compare(d *policy.Decision, r *Record) string {
	side := d.Ingress
	if r.Direction == ir.Egress.String() {
		side = d.Egress
	}
	want := Denied
	if side.Allowed {
		want = Allowed
	}
	if r.Verdict != want {
		return fmt.Sprintf("the dataplane %s on %s, the evaluator says %s", r.Verdict, r.Direction, want)
	}
	got := "no policy"
	if r.Policy != nil {
		got = policyText(r.Policy.Kind, r.Policy.Namespace, r.Policy.Name, r.Policy.Rule)
	}
	var exp string
	switch {
	case side.Decider != nil:
		rule := side.Rule
		exp = policyText(side.Decider.KindName(), side.Decider.Namespace, side.Decider.Name, &rule)
	case len(side.Isolating) > 0:
		// Isolation: any of the isolating policies may be the one named.
		for _, p := range side.Isolating {
			if r.Policy != nil && r.Policy.Rule == nil && p.Namespace == r.Policy.Namespace && p.Name == r.Policy.Name {
				return ""
			}
		}
		exp = "isolation by " + side.Isolating[0].Ref()
	default:
		exp = "no policy"
	}
	if got != exp {
		return fmt.Sprintf("the dataplane names %s, the evaluator %s", got, exp)
	}
	return ""
}

func policyText(kind, ns, name string, rule *int) string {
	s := kind + " " + name
	if ns != "" {
		s = kind + " " + ns + "/" + name
	}
	if rule != nil {
		s += fmt.Sprintf(" rule %d", *rule)
	} else {
		s = "isolation by " + s
	}
	return s
}

// LiveHandler serves a live explanation as JSON: GET ?from=&to=&port=&protocol=&since=, where
// from and to are namespace/pod or IP addresses. state returns the evaluator of the Ruleset in
// force, when that Ruleset came into force, and the records matching a filter.
func LiveHandler(state func(r *http.Request, f Filter) (*policy.Evaluator, time.Time, []Record, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f, err := ParseFilter(url.Values{"since": q["since"]}, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ev, since, recs, err := state(r, f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fl, err := liveFlow(ev, q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ExplainLive(ev, since, fl, recs))
	})
}

func liveFlow(ev *policy.Evaluator, q url.Values) (policy.Flow, error) {
	var f policy.Flow
	var err error
	if f.Src, err = ev.ParseEndpoint(q.Get("from")); err != nil {
		return f, fmt.Errorf("from %w", err)
	}
	if f.Dst, err = ev.ParseEndpoint(q.Get("to")); err != nil {
		return f, fmt.Errorf("to %w", err)
	}
	port, err := strconv.ParseUint(q.Get("port"), 10, 16)
	if err != nil || port == 0 {
		return f, fmt.Errorf("port %q: want 1-65535", q.Get("port"))
	}
	f.Port = uint16(port)
	proto := q.Get("protocol")
	if proto == "" {
		proto = "TCP"
	}
	if f.Protocol, err = ir.ParseProtocol(proto); err != nil {
		return f, err
	}
	return f, nil
}
