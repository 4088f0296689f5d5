package flow

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"

	"github.com/rampart-sec/rampart/internal/ring"
	"time"
)

// Log keeps the last published records (a ring.Buffer: up to its size, older records make
// room, which is retention, not loss) and hands new ones to followers and to an optional writer.
type Log struct {
	mu      sync.Mutex
	ring    *ring.Buffer[Record]
	subs    map[*subscriber]struct{}
	w       io.Writer
	dropped map[string]uint64
	total   uint64
}

type subscriber struct {
	f  Filter
	ch chan Record
}

// NewLog keeps up to size records (default 8192) and also writes each as a JSON line to w
// (optional).
func NewLog(size int, w io.Writer) *Log {
	if size <= 0 {
		size = 8192
	}
	return &Log{ring: ring.New[Record](size), subs: map[*subscriber]struct{}{}, w: w, dropped: map[string]uint64{}}
}

// Add publishes a record.
func (l *Log) Add(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	l.ring.Add(r)
	for s := range l.subs {
		if !s.f.Match(&r) {
			continue
		}
		select {
		case s.ch <- r:
		default:
			l.dropped["follower_slow"]++ // this follower misses it; it stays in the ring
		}
	}
	if l.w != nil {
		b, err := json.Marshal(r)
		if err == nil {
			b = append(b, '\n')
			_, err = l.w.Write(b)
		}
		if err != nil {
			l.dropped["file_write"]++
		}
	}
}

// Total is how many records were published.
func (l *Log) Total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Dropped returns records that a follower or the file did not get, by reason.
func (l *Log) Dropped() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.dropped))
	for k, v := range l.dropped {
		out[k] = v
	}
	return out
}

// Query returns the records matching f, oldest first.
func (l *Log) Query(f Filter) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queryLocked(f)
}

func (l *Log) queryLocked(f Filter) []Record {
	var out []Record
	l.ring.Each(func(r *Record) bool {
		if f.Match(r) {
			out = append(out, *r)
		}
		return true
	})
	return out
}

// Follow returns the records matching f so far and a channel of those published after;
// cancel ends the subscription.
func (l *Log) Follow(f Filter) (past []Record, ch <-chan Record, cancel func()) {
	s := &subscriber{f: f, ch: make(chan Record, 4096)}
	l.mu.Lock()
	past = l.queryLocked(f)
	l.subs[s] = struct{}{}
	l.mu.Unlock()
	return past, s.ch, func() {
		l.mu.Lock()
		delete(l.subs, s)
		l.mu.Unlock()
	}
}

// Stream hands fn the records matching f, oldest first; with follow, then those published
// after, until ctx ends. It stops at fn's first error and returns it.
func (l *Log) Stream(ctx context.Context, f Filter, follow bool, fn func(Record) error) error {
	if !follow {
		for _, r := range l.Query(f) {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	past, ch, cancel := l.Follow(f)
	defer cancel()
	for _, r := range past {
		if err := fn(r); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-ch:
			if err := fn(r); err != nil {
				return err
			}
		}
	}
}

// Filter selects records. Zero fields match everything.
type Filter struct {
	Since     time.Time // records published at or after
	Verdict   string    // allowed | denied
	Pod       string    // namespace/name of either end
	Namespace string    // namespace of either end
	Policy    string    // name (or namespace/name) of the deciding, isolating or staged policy
	Node      string
}

// Match reports whether r passes the filter.
func (f *Filter) Match(r *Record) bool {
	switch {
	case !f.Since.IsZero() && r.Time.Before(f.Since):
		return false
	case f.Verdict != "" && !strings.EqualFold(f.Verdict, r.Verdict):
		return false
	case f.Node != "" && f.Node != r.Node:
		return false
	case f.Namespace != "" && r.Source.Namespace != f.Namespace && r.Destination.Namespace != f.Namespace:
		return false
	case f.Pod != "" && r.Source.Namespace+"/"+r.Source.Pod != f.Pod && r.Destination.Namespace+"/"+r.Destination.Pod != f.Pod:
		return false
	}
	if f.Policy == "" {
		return true
	}
	if namesPolicy(r.Policy, f.Policy) {
		return true
	}
	return r.Staged != nil && namesPolicy(r.Staged.Policy, f.Policy)
}

func namesPolicy(p *PolicyRef, name string) bool {
	if p == nil {
		return false
	}
	is := func(ns, n string) bool { return n == name || (ns != "" && ns+"/"+n == name) }
	if is(p.Namespace, p.Name) {
		return true
	}
	for _, q := range p.IsolatedBy {
		if is(q.Namespace, q.Name) {
			return true
		}
	}
	return false
}
