package threat

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rampart-sec/rampart/internal/ring"
)

// Alert types.
const (
	TypePortScan   = "port-scan"
	TypeSynFlood   = "syn-flood"
	TypeThreatFeed = "threat-feed"
	TypeHoneypot   = "honeypot"
	TypeShield     = "shield"
)

// Alert is one detection, as `rampart alerts -o json` prints it.
type Alert struct {
	Time     time.Time `json:"time"`
	Node     string    `json:"node"`
	Type     string    `json:"type"`
	Severity string    `json:"severity"` // low | medium | high | critical
	Source   Party     `json:"source"`
	Target   Party     `json:"target"`
	Evidence Evidence  `json:"evidence"`
	Feed     string    `json:"feed,omitempty"`
	// Response is what was done: alert (nothing more), block, rateLimit, quarantine; with
	// "-failed" appended when the kernel refused it.
	Response string `json:"response"`
	Message  string `json:"message"`
}

// Party is one end of what an alert is about; Namespace and Pod are empty for addresses that
// are no pod (and Target is empty for a horizontal scan, whose targets are Evidence.Hosts).
type Party struct {
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	IP        string `json:"ip,omitempty"`
}

// Evidence is what the detector saw.
type Evidence struct {
	// Scan is the kind of first contact seen most: tcp-syn, tcp-fin, tcp-null, tcp-xmas, tcp-other, udp, sctp.
	Scan  string   `json:"scan,omitempty"`
	Ports []uint16 `json:"ports,omitempty"`
	Hosts []string `json:"hosts,omitempty"`
	// Count is how many first contacts (scans), attempts (floods, decoys) or packets (feeds).
	Count int `json:"count"`
	// Rate and Baseline (per second) for floods.
	Rate      float64   `json:"rate,omitempty"`
	Baseline  float64   `json:"baseline,omitempty"`
	Protocol  string    `json:"protocol,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Log keeps the last alerts and hands new ones to followers.
type Log struct {
	mu     sync.Mutex
	ring   *ring.Buffer[Alert]
	total  uint64
	subs   map[chan Alert]struct{}
	missed uint64 // alerts a slow follower did not get
}

// NewLog keeps up to size alerts (default 4096).
func NewLog(size int) *Log {
	if size <= 0 {
		size = 4096
	}
	return &Log{ring: ring.New[Alert](size), subs: map[chan Alert]struct{}{}}
}

// Add publishes an alert.
func (l *Log) Add(a Alert) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	l.ring.Add(a)
	for ch := range l.subs {
		select {
		case ch <- a:
		default:
			l.missed++
		}
	}
}

// Query returns the alerts kept that match f, oldest first.
func (l *Log) Query(f Filter) []Alert {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queryLocked(f)
}

func (l *Log) queryLocked(f Filter) []Alert {
	var out []Alert
	l.ring.Each(func(a *Alert) bool {
		if f.Match(a) {
			out = append(out, *a)
		}
		return true
	})
	return out
}

// Total is how many alerts were raised.
func (l *Log) Total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Stream calls fn with the kept alerts matching f and, with follow, with new ones until ctx
// ends or fn fails.
func (l *Log) Stream(ctx context.Context, f Filter, follow bool, fn func(Alert) error) error {
	l.mu.Lock()
	past := l.queryLocked(f)
	var ch chan Alert
	if follow {
		ch = make(chan Alert, 256)
		l.subs[ch] = struct{}{}
		defer func() { l.mu.Lock(); delete(l.subs, ch); l.mu.Unlock() }()
	}
	l.mu.Unlock()
	for _, a := range past {
		if err := fn(a); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-ch:
			if !f.Match(&a) {
				continue
			}
			if err := fn(a); err != nil {
				return err
			}
		}
	}
}

// Filter selects alerts; zero fields match everything.
type Filter struct {
	Since time.Time
	Type  string
	// Pod (namespace/name) matches alerts whose source or target it is; Namespace likewise.
	Pod, Namespace string
}

// Match reports whether a passes f.
func (f Filter) Match(a *Alert) bool {
	if !f.Since.IsZero() && a.Time.Before(f.Since) {
		return false
	}
	if f.Type != "" && a.Type != f.Type {
		return false
	}
	is := func(p Party) bool {
		return (f.Pod == "" || p.Namespace+"/"+p.Pod == f.Pod) && (f.Namespace == "" || p.Namespace == f.Namespace)
	}
	return (f.Pod == "" && f.Namespace == "") || is(a.Source) || is(a.Target)
}

// ParseFilter reads a filter from GET /v1/alerts's parameters: since (a duration or an RFC
// 3339 time), type, pod, namespace.
func ParseFilter(get func(string) string, now time.Time) (Filter, error) {
	f := Filter{Type: get("type"), Pod: get("pod"), Namespace: get("namespace")}
	if s := get("since"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			f.Since = now.Add(-d)
		} else if t, err := time.Parse(time.RFC3339, s); err == nil {
			f.Since = t
		} else {
			return f, err
		}
	}
	return f, nil
}

// Handler serves GET /v1/alerts as JSON lines (follow=true streams new ones).
func Handler(l *Log) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		f, err := ParseFilter(q.Get, time.Now())
		if err != nil {
			http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
			return
		}
		follow, _ := strconv.ParseBool(q.Get("follow"))
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl, _ := w.(http.Flusher)
		if follow && fl != nil {
			fl.Flush()
		}
		enc := json.NewEncoder(w)
		_ = l.Stream(r.Context(), f, follow, func(a Alert) error {
			if err := enc.Encode(a); err != nil {
				return err
			}
			if follow && fl != nil {
				fl.Flush()
			}
			return nil
		})
	})
}
