package flow

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Handler serves GET /v1/flows: the records matching the query as JSON lines, oldest first;
// with follow=true it keeps the response open and streams new records as they are published.
// Parameters: since (a duration such as 5m, or an RFC 3339 time), verdict, pod (ns/name),
// namespace, policy, node, follow.
func Handler(log *Log) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		f, err := ParseFilter(q, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		follow, _ := strconv.ParseBool(q.Get("follow"))
		w.Header().Set("Content-Type", "application/x-ndjson")
		if follow {
			flush(w) // the headers: a follower knows the stream is open before any record
		}
		enc := json.NewEncoder(w)
		_ = log.Stream(r.Context(), f, follow, func(rec Record) error {
			if err := enc.Encode(rec); err != nil {
				return err
			}
			if follow {
				flush(w)
			}
			return nil
		})
	})
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// ParseFilter reads a filter from query parameters; since is relative to now.
func ParseFilter(q url.Values, now time.Time) (Filter, error) {
	f := Filter{Verdict: q.Get("verdict"), Pod: q.Get("pod"), Namespace: q.Get("namespace"), Policy: q.Get("policy"), Node: q.Get("node")}
	if v := f.Verdict; v != "" && v != Allowed && v != Denied {
		return f, fmt.Errorf("verdict %q: want allowed or denied", v)
	}
	if f.Pod != "" && !strings.Contains(f.Pod, "/") {
		return f, fmt.Errorf("pod %q: want namespace/name", f.Pod)
	}
	if s := q.Get("since"); s != "" {
		t, err := ParseSince(s, now)
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	return f, nil
}

// ParseSince reads a duration back from now ("5m") or an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("since %q: must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want a duration (5m) or an RFC 3339 time", s)
	}
	return t, nil
}

// Values encodes a filter as query parameters (Since as an RFC 3339 time).
func (f Filter) Values() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"verdict": f.Verdict, "pod": f.Pod, "namespace": f.Namespace, "policy": f.Policy, "node": f.Node} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	return q
}

// Fetch reads records from a /v1/flows endpoint at base (http://host:port) through c, calling
// fn for each; with follow it returns only when ctx ends or the server closes the stream.
func Fetch(ctx context.Context, c *http.Client, base string, f Filter, follow bool, fn func(Record) error) error {
	q := f.Values()
	if follow {
		q.Set("follow", "true")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/flows?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("flows: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := Decode(resp.Body, fn); err != nil && ctx.Err() == nil {
		return fmt.Errorf("flows: %w", err)
	}
	return nil
}

// Decode reads records as JSON lines (what `rampart flows -o json` prints), calling fn for
// each; blank lines are skipped, and a line that is no record is an error naming it.
func Decode(r io.Reader, fn func(Record) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(b, &rec); err != nil {
			return fmt.Errorf("line %d: not a flow record: %w", line, err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return sc.Err()
}
