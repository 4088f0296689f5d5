package flow

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func rec(at time.Time, verdict, srcNS, srcPod, dstNS, dstPod, policy string) Record {
	r := Record{Time: at, Verdict: verdict, Source: Endpoint{Namespace: srcNS, Pod: srcPod}, Destination: Endpoint{Namespace: dstNS, Pod: dstPod}}
	if policy != "" {
		ns, name, _ := strings.Cut(policy, "/")
		r.Policy = &PolicyRef{Kind: "NetworkPolicy", Namespace: ns, Name: name}
	}
	return r
}

func TestFilter(t *testing.T) {
	r := rec(t0, Denied, "a", "x", "b", "y", "b/deny")
	r.Policy.IsolatedBy = []PolicyName{{Namespace: "b", Name: "deny"}, {Namespace: "b", Name: "other"}}
	for _, tc := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"empty", Filter{}, true},
		{"verdict", Filter{Verdict: Denied}, true},
		{"other verdict", Filter{Verdict: Allowed}, false},
		{"source pod", Filter{Pod: "a/x"}, true},
		{"destination pod", Filter{Pod: "b/y"}, true},
		{"other pod", Filter{Pod: "a/y"}, false},
		{"namespace", Filter{Namespace: "b"}, true},
		{"other namespace", Filter{Namespace: "c"}, false},
		{"policy name", Filter{Policy: "deny"}, true},
		{"policy ns/name", Filter{Policy: "b/deny"}, true},
		{"isolating policy", Filter{Policy: "other"}, true},
		{"unrelated policy", Filter{Policy: "allow"}, false},
		{"since before", Filter{Since: t0.Add(-time.Second)}, true},
		{"since after", Filter{Since: t0.Add(time.Second)}, false},
	} {
		if got := tc.f.Match(&r); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLogRingAndFollow(t *testing.T) {
	l := NewLog(3, nil)
	for i := 0; i < 5; i++ {
		l.Add(rec(t0.Add(time.Duration(i)*time.Second), Allowed, "a", "x", "b", "y", ""))
	}
	got := l.Query(Filter{})
	if len(got) != 3 || !got[0].Time.Equal(t0.Add(2*time.Second)) || !got[2].Time.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("ring keeps the newest 3 in order, got %+v", got)
	}
	past, ch, cancel := l.Follow(Filter{Verdict: Denied})
	defer cancel()
	if len(past) != 0 {
		t.Errorf("no denied record yet, got %d", len(past))
	}
	l.Add(rec(t0, Allowed, "a", "x", "b", "y", ""))
	l.Add(rec(t0, Denied, "a", "x", "b", "y", "b/deny"))
	select {
	case r := <-ch:
		if r.Verdict != Denied {
			t.Errorf("follower got %+v", r)
		}
	case <-time.After(time.Second):
		t.Fatal("follower got nothing")
	}
	for i := 0; i < 5000; i++ { // a follower that reads nothing loses records, and they are counted
		l.Add(rec(t0, Denied, "a", "x", "b", "y", "b/deny"))
	}
	if d := l.Dropped()["follower_slow"]; d != 5000-4096 {
		t.Errorf("follower_slow = %d, want %d", d, 5000-4096)
	}
}

func TestHandler(t *testing.T) {
	l := NewLog(10, nil)
	now := time.Now()
	l.Add(rec(now.Add(-10*time.Minute), Denied, "a", "x", "b", "y", "b/deny"))
	l.Add(rec(now.Add(-time.Minute), Denied, "a", "x", "b", "y", "b/deny"))
	l.Add(rec(now.Add(-time.Minute), Allowed, "a", "x", "b", "y", "b/allow"))
	srv := httptest.NewServer(Handler(l))
	defer srv.Close()
	for _, tc := range []struct {
		query string
		want  int
		code  int
	}{
		{"", 3, 200},
		{"verdict=denied", 2, 200},
		{"verdict=denied&since=5m", 1, 200},
		{"policy=allow", 1, 200},
		{"verdict=maybe", 0, 400},
		{"pod=nonamespace", 0, 400},
		{"since=yesterday", 0, 400},
	} {
		resp, err := http.Get(srv.URL + "/v1/flows?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var r Record
			if resp.StatusCode == 200 {
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Errorf("%s: bad line %q", tc.query, sc.Text())
				}
				n++
			}
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || (tc.code == 200 && n != tc.want) {
			t.Errorf("%s: status %d with %d records, want %d with %d", tc.query, resp.StatusCode, n, tc.code, tc.want)
		}
	}
	// Fetch follows the stream and sees a record published after it started.
	got := make(chan Record, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	go func() {
		_ = Fetch(ctx, http.DefaultClient, srv.URL, Filter{Policy: "late"}, true, func(r Record) error { got <- r; cancel(); return nil })
	}()
	deadline := time.Now().Add(3 * time.Second)
	for len(got) == 0 && time.Now().Before(deadline) {
		l.Add(rec(time.Now(), Denied, "a", "x", "b", "y", "b/late"))
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case r := <-got:
		if r.Policy == nil || r.Policy.Name != "late" {
			t.Errorf("followed %+v", r)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("follow saw nothing")
	}
	if _, err := ParseFilter(url.Values{"since": {"-5m"}}, now); err == nil {
		t.Error("a negative since was accepted")
	}
}

func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.jsonl")
	f, err := OpenRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 39) + "\n") // 40 bytes: two fit in 100
	for i := 0; i < 7; i++ {
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for name, want := range map[string]int64{path: 40, path + ".1": 80, path + ".2": 80} {
		st, err := os.Stat(name)
		if err != nil || st.Size() != want {
			t.Errorf("%s: %v, size want %d", name, err, want)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("kept more than 2 old files")
	}
}
