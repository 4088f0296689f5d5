package report

import (
	"testing"

	"github.com/rampart-sec/rampart/internal/vuln"
	"github.com/rampart-sec/rampart/internal/vuln/exposure"
)

func TestExplain(t *testing.T) {
	crit := vuln.Vulnerability{ID: "X-1", Severity: vuln.Severity{Score: 9.8, Level: vuln.LevelCritical}, Fixed: "1.2.3"}
	unrated := vuln.Vulnerability{ID: "X-2", Severity: vuln.Severity{Level: vuln.LevelUnknown}}
	port := func(c exposure.Class, p uint16) exposure.Port {
		return exposure.Port{Port: p, Protocol: "TCP", Class: c, Because: "why"}
	}
	tests := []struct {
		v    vuln.Vulnerability
		pods []exposure.Pod
		want string
	}{
		{crit, []exposure.Pod{{Pod: "web/frontend", Class: exposure.Internet, Ports: []exposure.Port{port(exposure.Internet, 443)}}},
			"critical (CVSS 9.8), fixed in 1.2.3: pod web/frontend accepts TCP 443 from any address (why)"},
		{crit, []exposure.Pod{{Pod: "web/frontend", Class: exposure.Internet, Ports: []exposure.Port{{Port: 443, Protocol: "TCP", Class: exposure.Internet, FromAddresses: []string{"0.0.0.0/5", "8.0.0.0/7", "11.0.0.0/8", "12.0.0.0/6"}, Because: "why"}}}},
			"critical (CVSS 9.8), fixed in 1.2.3: pod web/frontend accepts TCP 443 from the internet (0.0.0.0/5, 8.0.0.0/7, 11.0.0.0/8, ...) (why)"},
		{unrated, []exposure.Pod{{Pod: "a/b", Class: exposure.External, Ports: []exposure.Port{port(exposure.None, 80), {Port: 53, Protocol: "UDP", Class: exposure.External, FromAddresses: []string{"192.168.0.0/16"}, Because: "why"}}}},
			"unrated, no fix published: pod a/b accepts UDP 53 from 192.168.0.0/16 outside the cluster (why)"},
		{unrated, []exposure.Pod{{Pod: "a/b", Class: exposure.Cluster, Ports: []exposure.Port{port(exposure.Cluster, 80), port(exposure.Cluster, 81)}}},
			"unrated, no fix published: pod a/b accepts TCP 80 (and 1 more port) from every pod in every namespace (why)"},
		{unrated, []exposure.Pod{
			{Pod: "a/b", Class: exposure.Pods, Ports: []exposure.Port{{Port: 5432, Protocol: "TCP", Class: exposure.Pods, FromPods: []string{"x/y"}, PodsAllowed: 1, PodsTotal: 9, Because: "why"}}},
			{Pod: "a/c", Class: exposure.None}},
			"unrated, no fix published: pod a/b accepts TCP 5432 only from 1 of 9 pods (x/y) (why) (and 1 more pod)"},
		{crit, nil, "critical (CVSS 9.8), fixed in 1.2.3: no running pod uses the image"},
		{crit, []exposure.Pod{{Pod: "a/pending", Class: exposure.None, NoAddress: true}},
			"critical (CVSS 9.8), fixed in 1.2.3: pod a/pending has no address yet (not running), so nothing can reach it for now"},
	}
	for _, tc := range tests {
		if got := Explain(tc.v, tc.pods); got != tc.want {
			t.Errorf("Explain:\n got %s\nwant %s", got, tc.want)
		}
	}
}

func TestRankOrdersBySeverityTimesExposure(t *testing.T) {
	// A medium finding on an internet-facing pod outranks a critical one on an isolated pod:
	// 5.3 x 1.0 > 9.8 x 0.1.
	imgs := []Image{
		{Image: "open", Pods: []string{"ns/open"}, Vulnerabilities: []vuln.Vulnerability{{ID: "M", Severity: vuln.Severity{Score: 5.3, Level: vuln.LevelMedium}}}},
		{Image: "closed", Pods: []string{"ns/closed"}, Vulnerabilities: []vuln.Vulnerability{{ID: "C", Severity: vuln.Severity{Score: 9.8, Level: vuln.LevelCritical}}}},
	}
	fs := rankWith(imgs, map[string]exposure.Pod{
		"ns/open":   {Pod: "ns/open", Class: exposure.Internet},
		"ns/closed": {Pod: "ns/closed", Class: exposure.None},
	})
	if len(fs) != 2 || fs[0].ID != "M" || fs[0].Rank != 5.3 || fs[1].Rank != 0.98 {
		t.Errorf("ranked = %+v", fs)
	}
}

func rankWith(images []Image, m map[string]exposure.Pod) []Finding {
	return rank(images, func(k string) (exposure.Pod, bool) { p, ok := m[k]; return p, ok })
}

func TestRankWhatIf(t *testing.T) {
	crit := vuln.Vulnerability{ID: "C", Severity: vuln.Severity{Score: 9.8, Level: vuln.LevelCritical}}
	imgs := []Image{{Image: "api", Pods: []string{"backend/api-0", "backend/api-1"}, Vulnerabilities: []vuln.Vulnerability{crit}}}
	open := func(pod string) exposure.Pod {
		return exposure.Pod{Pod: pod, Class: exposure.Internet, Ports: []exposure.Port{{Port: 8080, Protocol: "TCP", Class: exposure.Internet}}}
	}
	only := func(pod string, from ...string) exposure.Pod {
		return exposure.Pod{Pod: pod, Class: exposure.Pods, Ports: []exposure.Port{
			{Port: 8080, Protocol: "TCP", Class: exposure.Pods, FromPods: from, PodsAllowed: len(from), PodsTotal: 6},
			{Port: 9090, Protocol: "TCP", Class: exposure.None}}}
	}
	now := map[string]exposure.Pod{"backend/api-0": open("backend/api-0"), "backend/api-1": open("backend/api-1")}
	after := map[string]exposure.Pod{
		"backend/api-0": only("backend/api-0", "frontend/web-0", "frontend/web-1"),
		"backend/api-1": only("backend/api-1", "frontend/web-0", "frontend/web-1"),
	}
	lookup := func(m map[string]exposure.Pod) func(string) (exposure.Pod, bool) {
		return func(k string) (exposure.Pod, bool) { p, ok := m[k]; return p, ok }
	}
	fs := rankWhatIf(imgs, lookup(now), lookup(after))
	if len(fs) != 1 {
		t.Fatalf("findings %+v", fs)
	}
	f := fs[0]
	if f.Exposure != exposure.Pods || f.ExposureBefore != exposure.Internet || f.Rank != 2.94 {
		t.Errorf("exposure %s, before %s, rank %v; want pods, internet, 2.94", f.Exposure, f.ExposureBefore, f.Rank)
	}
	if want := "internet -> 2 pods (frontend/web-0, frontend/web-1)"; f.ExposureChange != want {
		t.Errorf("change %q, want %q", f.ExposureChange, want)
	}
	// Closed entirely: "none".
	for k := range after {
		after[k] = exposure.Pod{Pod: k, Class: exposure.None, Ports: []exposure.Port{{Port: 8080, Protocol: "TCP", Class: exposure.None}}}
	}
	if got := rankWhatIf(imgs, lookup(now), lookup(after))[0].ExposureChange; got != "internet -> none" {
		t.Errorf("change %q, want internet -> none", got)
	}
}
