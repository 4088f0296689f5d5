package whatif_test

import (
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/whatif"
)

func load(t *testing.T, paths ...string) []model.Object {
	t.Helper()
	objs, err := model.Load(paths, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func staged(objs []model.Object) []model.Object {
	for _, o := range objs {
		m := o.Meta()
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[model.StagedAnnotation] = "true"
	}
	return objs
}

func rec(src, dst string, port uint16, verdict string) flow.Record {
	return flow.Record{Source: flow.Endpoint{IP: src}, Destination: flow.Endpoint{IP: dst, Port: port}, Protocol: "TCP", Verdict: verdict}
}

func TestCompare(t *testing.T) {
	open := model.FromObjects(load(t, "../../examples/cluster"))
	closed := model.FromObjects(load(t, "../../examples/cluster", "../../examples/policies"))
	policies := load(t, "../../examples/policies")
	for _, tc := range []struct {
		name     string
		before   *model.Cluster
		proposed []model.Object
		replace  bool
		records  []flow.Record
		// want: compared, changed, opened, closed, broken
		want      [5]int
		wantBreak string // a broken flow "from -> to port"
	}{
		{name: "every pair: a default deny breaks what it closes", before: open, proposed: policies,
			want: [5]int{66, 43, 0, 43, 43}, wantBreak: "frontend/web-0 -> db/postgres-0 5432"},
		{name: "staged proposals count as enforced", before: open, proposed: staged(load(t, "../../examples/policies")),
			want: [5]int{66, 43, 0, 43, 43}},
		{name: "observed flows: only the allowed one the proposal denies breaks", before: open, proposed: policies,
			records: []flow.Record{
				rec("10.244.1.10", "10.244.1.20", 8080, flow.Allowed), // web -> api: the request path stays
				rec("10.244.2.10", "10.244.2.20", 8080, flow.Allowed),
				rec("10.244.1.10", "10.244.1.30", 5432, flow.Allowed), // web -> postgres: closed
				rec("10.244.1.10", "10.244.1.30", 5432, flow.Allowed), // the same flow again
				rec("10.244.2.40", "10.244.1.30", 5432, flow.Denied),  // closed, but was denied anyway
				{Source: flow.Endpoint{IP: "nope"}, Verdict: flow.Allowed},
			},
			want: [5]int{4, 2, 0, 2, 1}, wantBreak: "frontend/web-0 -> db/postgres-0 5432"},
		{name: "replace with nothing opens what the policies closed", before: closed, replace: true,
			want: [5]int{66, 43, 43, 0, 0}},
		{name: "the same policies again change nothing", before: closed, proposed: policies,
			want: [5]int{66, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after, err := whatif.Apply(tc.before, tc.proposed, tc.replace)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := whatif.Compare(tc.before, after, tc.records)
			if err != nil {
				t.Fatal(err)
			}
			got := [5]int{rep.Compared, len(rep.Changed), rep.Opened, rep.Closed, rep.Broken}
			if got != tc.want {
				t.Errorf("compared/changed/opened/closed/broken = %v, want %v", got, tc.want)
			}
			if tc.wantBreak != "" {
				found := false
				for _, f := range rep.Changed {
					if f.Breaks && strings.Contains(tc.wantBreak, f.From+" -> "+f.To) && strings.HasSuffix(tc.wantBreak, " 5432") && f.Port == 5432 {
						found = true
					}
				}
				if !found {
					t.Errorf("%s not among the broken flows: %+v", tc.wantBreak, rep.Changed)
				}
				if !rep.Changed[0].Breaks {
					t.Error("broken flows are not listed first")
				}
			}
		})
	}
	// The cluster compared against is left as it was.
	if len(open.NetworkPolicies) != 0 || len(closed.NetworkPolicies) == 0 {
		t.Error("Apply changed its input")
	}
}

func TestApplyRefusesOtherKinds(t *testing.T) {
	c := model.FromObjects(load(t, "../../examples/cluster"))
	_, err := whatif.Apply(c, load(t, "../../examples/cluster/10-pods.yaml"), false)
	if err == nil || !strings.Contains(err.Error(), "a proposal holds only policies") {
		t.Fatalf("error %v", err)
	}
}
