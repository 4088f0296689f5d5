package recommend_test

import (
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/recommend"
)

func examples(t *testing.T) *model.Cluster {
	t.Helper()
	objs, err := model.Load([]string{"../../examples/cluster"}, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return model.FromObjects(objs)
}

func rec(src, dst string, port uint16, proto, verdict string, seen time.Time) flow.Record {
	return flow.Record{Source: flow.Endpoint{IP: src, Port: 40000}, Destination: flow.Endpoint{IP: dst, Port: port},
		Protocol: proto, Verdict: verdict, LastSeen: seen}
}

func find(pols []*networkingv1.NetworkPolicy, ref string) *networkingv1.NetworkPolicy {
	for _, p := range pols {
		if p.Namespace+"/"+p.Name == ref {
			return p
		}
	}
	return nil
}

func TestRecommend(t *testing.T) {
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	// examples/cluster: web-0 10.244.1.10, web-1 10.244.2.10 (frontend, app=web, port http
	// 8080); api-0/1 10.244.1.20/.2.20 (backend, app=api, http 8080, metrics 9090); postgres-0
	// 10.244.1.30 (db); coredns-0 10.244.1.2 (kube-system, k8s-app=kube-dns); prometheus-0
	// 10.244.2.40 (monitoring); nodes 192.168.50.11/12, pod CIDRs 10.244.1.0/24, 10.244.2.0/24.
	flows := []flow.Record{
		rec("10.244.1.10", "10.244.1.20", 8080, "TCP", flow.Allowed, now),
		rec("10.244.2.10", "10.244.2.20", 8080, "TCP", flow.Allowed, now),
		rec("10.244.1.20", "10.244.1.30", 5432, "TCP", flow.Allowed, now),
		rec("10.244.2.40", "10.244.1.20", 9090, "TCP", flow.Allowed, now),
		rec("10.244.2.40", "10.244.2.20", 9999, "TCP", flow.Allowed, now), // undeclared port: by number
		rec("203.0.113.9", "10.244.1.10", 8080, "TCP", flow.Allowed, now),
		rec("10.244.0.77", "10.244.1.10", 8080, "TCP", flow.Allowed, now), // no pod there, next to the pod CIDRs
		rec("192.168.50.12", "10.244.2.10", 8080, "TCP", flow.Allowed, now),
		rec("10.244.1.200", "10.244.2.10", 8080, "TCP", flow.Allowed, now), // no pod, inside a pod CIDR
		rec("10.244.1.10", "10.244.1.30", 5432, "TCP", flow.Denied, now),
		rec("10.244.1.10", "10.244.1.30", 9187, "TCP", flow.Allowed, old),
		rec("10.244.1.10", "10.244.1.2", 53, "UDP", flow.Allowed, now),
	}
	for _, tc := range []struct {
		name  string
		opts  recommend.Options
		check func(t *testing.T, res recommend.Result)
	}{
		{"workloads by label, peers by namespace, ports by name", recommend.Options{Since: now.Add(-time.Hour)}, func(t *testing.T, res recommend.Result) {
			api := find(res.Policies, "backend/rampart-api")
			if api == nil {
				t.Fatalf("no policy for backend/api: %v", names(res.Policies))
			}
			if got := api.Spec.PodSelector.MatchLabels; len(got) != 1 || got["app"] != "api" {
				t.Errorf("api selector %v, want app=api", got)
			}
			if len(api.Spec.Ingress) != 2 {
				t.Fatalf("api ingress %d rules, want 2 (web on http; prometheus on metrics and 9999)", len(api.Spec.Ingress))
			}
			want := []string{"frontend app=web http/TCP", "monitoring app=prometheus 9999/TCP,metrics/TCP"}
			var got []string
			for _, r := range api.Spec.Ingress {
				got = append(got, ruleText(r.From, r.Ports))
			}
			for _, w := range want {
				if !strings.Contains(strings.Join(got, "; "), w) {
					t.Errorf("api ingress %q lacks %q", got, w)
				}
			}
			if api.Annotations[model.StagedAnnotation] != "true" {
				t.Error("not staged by default")
			}
		}},
		{"external addresses aggregated, narrowed around pods; nodes exactly", recommend.Options{}, func(t *testing.T, res recommend.Result) {
			web := find(res.Policies, "frontend/rampart-web")
			if web == nil {
				t.Fatal("no policy for frontend/web")
			}
			var cidrs []string
			for _, r := range web.Spec.Ingress {
				for _, p := range r.From {
					if p.IPBlock != nil {
						cidrs = append(cidrs, p.IPBlock.CIDR)
					}
				}
			}
			got := strings.Join(cidrs, ",")
			for _, w := range []string{"203.0.113.0/24", "10.244.0.0/24", "192.168.50.12/32", "10.244.1.200/32"} {
				if !strings.Contains(got, w) {
					t.Errorf("web ingress blocks %s lack %s", got, w)
				}
			}
			if w := strings.Join(res.Warnings, "\n"); strings.Count(w, "aggregated to 10.244.1.200/32 only") != 1 {
				t.Errorf("warnings %q lack (once) the narrowed block", res.Warnings)
			}
		}},
		{"denied and old records allow nothing", recommend.Options{Since: now.Add(-time.Hour)}, func(t *testing.T, res recommend.Result) {
			if res.Ignored["denied"] != 1 || res.Ignored["before --since"] != 1 {
				t.Errorf("ignored %v", res.Ignored)
			}
			web := find(res.Policies, "frontend/rampart-web")
			for _, r := range web.Spec.Egress {
				for _, p := range r.To {
					if p.PodSelector != nil && p.PodSelector.MatchLabels["app"] == "postgres" {
						t.Errorf("web may reach postgres: %s", ruleText(r.To, r.Ports))
					}
				}
			}
		}},
		{"default deny and DNS per namespace; kube-system left alone", recommend.Options{}, func(t *testing.T, res recommend.Result) {
			for _, ns := range []string{"frontend", "backend", "db", "monitoring"} {
				if find(res.Policies, ns+"/"+recommend.DefaultDenyName) == nil || find(res.Policies, ns+"/"+recommend.AllowDNSName) == nil {
					t.Errorf("namespace %s lacks the default deny or DNS", ns)
				}
			}
			for _, p := range res.Policies {
				if p.Namespace == "kube-system" {
					t.Errorf("kube-system covered without being named: %s", p.Name)
				}
			}
		}},
		{"named namespaces only; DNS keeps answering", recommend.Options{Namespaces: []string{"kube-system", "db"}, Enforce: true}, func(t *testing.T, res recommend.Result) {
			for _, p := range res.Policies {
				if p.Namespace != "kube-system" && p.Namespace != "db" {
					t.Errorf("policy %s/%s outside the named namespaces", p.Namespace, p.Name)
				}
				if _, ok := p.Annotations[model.StagedAnnotation]; ok {
					t.Errorf("%s staged with Enforce", p.Name)
				}
			}
			if p := find(res.Policies, "kube-system/"+recommend.DNSIngressName); p == nil {
				t.Error("the DNS namespace does not keep answering every pod")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := recommend.Recommend(examples(t), flows, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, res)
		})
	}
}

func TestRecommendRejects(t *testing.T) {
	for _, tc := range []struct {
		opts recommend.Options
		want string
	}{
		{recommend.Options{Namespaces: []string{"nope"}}, `namespace "nope": not in the cluster`},
		{recommend.Options{PrefixV4: 33}, "IPv4 prefix length 33"},
		{recommend.Options{PrefixV6: 8}, "IPv6 prefix length 8"},
	} {
		if _, err := recommend.Recommend(examples(t), nil, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.opts, err, tc.want)
		}
	}
}

func names(pols []*networkingv1.NetworkPolicy) []string {
	var out []string
	for _, p := range pols {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

func ruleText(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) string {
	var ps, pp []string
	for _, p := range peers {
		s := ""
		if p.NamespaceSelector != nil {
			s = p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] + " "
		}
		if p.PodSelector != nil {
			s += metav1.FormatLabelSelector(p.PodSelector)
		}
		if p.IPBlock != nil {
			s += p.IPBlock.CIDR
		}
		ps = append(ps, s)
	}
	for _, p := range ports {
		pp = append(pp, p.Port.String()+"/"+string(*p.Protocol))
	}
	return strings.Join(ps, "|") + " " + strings.Join(pp, ",")
}
