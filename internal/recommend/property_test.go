package recommend_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/recommend"
)

// genPod is a generated pod with the workload it belongs to (the ground truth the
// recommendation must recover from labels and owners alone).
type genPod struct {
	pod      *corev1.Pod
	workload string // ns/name
	ip       netip.Addr
	ports    []policy.PortProto
}

// genCluster builds random namespaces of random workloads: Deployments (ReplicaSet owners,
// pod-template-hash), StatefulSets (per-pod labels), bare labelled pods and, at most once per
// namespace, pods without labels. Workloads of a namespace never share their labels.
func genCluster(r *rand.Rand) (*model.Cluster, []genPod) {
	c := model.NewCluster()
	var pods []genPod
	nodes := 2
	for n := 0; n < nodes; n++ {
		c.Nodes[fmt.Sprintf("node-%d", n)] = &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", n)},
			Spec:       corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.244.%d.0/24", n)},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.168.7.%d", 10+n)}}},
		}
	}
	next := 2
	nss := 1 + r.Intn(3)
	for i := 0; i < nss; i++ {
		ns := fmt.Sprintf("ns%d", i)
		c.Namespaces[ns] = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{corev1.LabelMetadataName: ns}}}
		unlabeled := false
		for w, nw := 0, 1+r.Intn(4); w < nw; w++ {
			name := fmt.Sprintf("app%d", w)
			kind := r.Intn(4)
			if kind == 3 && unlabeled {
				kind = 2
			}
			unlabeled = unlabeled || kind == 3
			ports := randomPorts(r)
			for rep, n := 0, 1+r.Intn(3); rep < n; rep++ {
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Labels: map[string]string{}}}
				switch kind {
				case 0: // Deployment
					p.Name = fmt.Sprintf("%s-7d9f-%d", name, rep)
					p.Labels["app"], p.Labels["pod-template-hash"] = name, "7d9f"
					p.Labels["team"] = "shared" // common to workloads: never enough alone
					p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name + "-7d9f", UID: "u", Controller: ptr(true)}}
				case 1: // StatefulSet
					p.Name = fmt.Sprintf("%s-%d", name, rep)
					p.Labels["app.kubernetes.io/name"], p.Labels["statefulset.kubernetes.io/pod-name"] = name, p.Name
					p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: name, UID: "u", Controller: ptr(true)}}
				case 2: // bare pods labelled alike
					p.Name = fmt.Sprintf("%s-bare-%d", name, rep)
					p.Labels["role"], p.Labels["team"] = name, "shared"
				case 3: // no labels
					p.Name = fmt.Sprintf("nolabel-%d", rep)
				}
				node := r.Intn(nodes)
				ip := netip.MustParseAddr(fmt.Sprintf("10.244.%d.%d", node, next))
				next++
				p.Spec.NodeName = fmt.Sprintf("node-%d", node)
				p.Status.PodIP, p.Status.PodIPs = ip.String(), []corev1.PodIP{{IP: ip.String()}}
				p.Status.Phase = corev1.PodRunning
				ct := corev1.Container{Name: "main", Image: "img"}
				for j, pp := range ports {
					cp := corev1.ContainerPort{ContainerPort: int32(pp.Port), Protocol: corev1.Protocol(pp.Protocol.String())}
					if j%2 == 0 {
						cp.Name = fmt.Sprintf("p%d", pp.Port)
					}
					ct.Ports = append(ct.Ports, cp)
				}
				p.Spec.Containers = []corev1.Container{ct}
				c.Pods[ns+"/"+p.Name] = model.PodFrom(p)
				pods = append(pods, genPod{pod: p, workload: ns + "/" + name, ip: ip, ports: ports})
			}
		}
	}
	return c, pods
}

func randomPorts(r *rand.Rand) []policy.PortProto {
	all := []policy.PortProto{{Port: 80, Protocol: ir.TCP}, {Port: 8080, Protocol: ir.TCP}, {Port: 9090, Protocol: ir.TCP}, {Port: 5000, Protocol: ir.UDP}}
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return all[:1+r.Intn(3)]
}

func ptr[T any](v T) *T { return &v }

func record(src, dst netip.Addr, pp policy.PortProto, verdict string) flow.Record {
	return flow.Record{Source: flow.Endpoint{IP: src.String(), Port: 40000}, Destination: flow.Endpoint{IP: dst.String(), Port: pp.Port},
		Protocol: pp.Protocol.String(), Verdict: verdict}
}

type talk struct {
	from, to string
	pp       policy.PortProto
}

// For random clusters and random observed flows, the recommended policies validate, allow
// every observed flow, and deny every pod-to-pod flow between workloads (or on ports) that
// never talked.
func TestPropertyRecommendation(t *testing.T) {
	for seed := int64(0); seed < 200; seed++ {
		r := rand.New(rand.NewSource(seed))
		c, pods := genCluster(r)
		var records []flow.Record
		talked := map[talk]bool{}
		for i, n := 0, r.Intn(3*len(pods)+1); i < n; i++ {
			src, dst := pods[r.Intn(len(pods))], pods[r.Intn(len(pods))]
			if src.ip == dst.ip {
				continue
			}
			pp := dst.ports[r.Intn(len(dst.ports))]
			records = append(records, record(src.ip, dst.ip, pp, flow.Allowed))
			talked[talk{src.workload, dst.workload, pp}] = true
		}
		for i, n := 0, r.Intn(3); i < n; i++ { // from outside the cluster
			dst := pods[r.Intn(len(pods))]
			src := netip.AddrFrom4([4]byte{198, 51, 100, byte(r.Intn(250) + 1)})
			records = append(records, record(src, dst.ip, dst.ports[0], flow.Allowed))
		}
		if r.Intn(2) == 0 && len(pods) > 1 { // a denied record allows nothing
			records = append(records, record(pods[0].ip, pods[1].ip, pods[1].ports[0], flow.Denied))
		}
		res, err := recommend.Recommend(c, records, recommend.Options{Enforce: true})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for _, w := range res.Warnings {
			if !strings.Contains(w, "no stable label in common") { // the unlabeled pods, expected
				t.Fatalf("seed %d: unexpected warning: %s", seed, w)
			}
		}
		// The output must pass the same validation as any manifest.
		var buf bytes.Buffer
		for _, p := range res.Policies {
			b, err := yaml.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&buf, "---\n%s", b)
		}
		objs, err := model.Decode(bytes.NewReader(buf.Bytes()), "recommended", model.DecodeOptions{})
		if err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, buf.String())
		}
		after := c.Clone()
		for _, o := range objs {
			after.Apply(o)
		}
		rs, err := compile.Compile(after)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		ev := policy.New(rs)
		for _, rec := range records {
			if rec.Verdict != flow.Allowed {
				continue
			}
			proto, _ := ir.ParseProtocol(rec.Protocol)
			f := policy.Flow{Src: netip.MustParseAddr(rec.Source.IP), Dst: netip.MustParseAddr(rec.Destination.IP), Protocol: proto, Port: rec.Destination.Port}
			if d := ev.Verdict(f); !d.Allowed {
				t.Fatalf("seed %d: observed flow %s denied: egress %s / ingress %s\n%s", seed, f, d.Egress.Reason, d.Ingress.Reason, buf.String())
			}
		}
		for _, src := range pods {
			for _, dst := range pods {
				if src.ip == dst.ip {
					continue
				}
				for _, pp := range dst.ports {
					if talked[talk{src.workload, dst.workload, pp}] {
						continue
					}
					f := policy.Flow{Src: src.ip, Dst: dst.ip, Protocol: pp.Protocol, Port: pp.Port}
					if d := ev.Verdict(f); d.Allowed {
						t.Fatalf("seed %d: %s (%s) -> %s (%s) %s never talked but is allowed: egress %s / ingress %s\n%s", seed, src.pod.Name, src.workload, dst.pod.Name, dst.workload, pp, d.Egress.Reason, d.Ingress.Reason, buf.String())
					}
				}
			}
		}
	}
}
