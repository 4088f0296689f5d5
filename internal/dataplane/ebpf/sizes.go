package ebpf

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MapSizes sets the number of entries of the eBPF dataplane's maps by kind, where the
// defaults (in bpf/*.c) are too small for a cluster or larger than a node needs. A state that
// needs more than a map holds fails its sync whole with a MapFullError, and
// rampart_programmed_capacity reports every size.
type MapSizes map[string]uint32

// mapKinds are the kinds users size, and the maps each one sizes. The generation tables
// (endpoints ... backends) are sized in both slots; the connect-time balancer's maps are in
// sock.c.
var mapKinds = map[string][]string{
	"endpoints":   {"endpoints0", "endpoints1"},
	"ipcache":     {"ipcache0", "ipcache1"},
	"policy":      {"policy0", "policy1"},
	"services":    {"services0", "services1"},
	"backends":    {"backends0", "backends1"},
	"conntrack":   {"conntrack"},
	"nat":         {"revnat", "nat_out", "nat_back", "affinity"},
	"lb_services": {"lb_services"},
	"lb_backends": {"lb_backends"},
	"lb_flows":    {"lb_revnat", "lb_flows", "lb_affinity"},
}

// MapKinds lists the kinds ParseMapSizes accepts, sorted.
func MapKinds() []string {
	var out []string
	for k := range mapKinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ParseMapSizes reads "kind=entries,..." (kinds: MapKinds).
func ParseMapSizes(s string) (MapSizes, error) {
	out := MapSizes{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("map size %q: want KIND=ENTRIES", kv)
		}
		if _, known := mapKinds[k]; !known {
			return nil, fmt.Errorf("map size %q: unknown kind %q (kinds: %s)", kv, k, strings.Join(MapKinds(), ", "))
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 1 || n > 1<<26 {
			return nil, fmt.Errorf("map size %q: entries must be a number from 1 to %d", kv, 1<<26)
		}
		out[k] = uint32(n)
	}
	return out, nil
}

// sizedSpec is a collection spec whose maps can be sized (collSpec).
type sizedSpec interface {
	setSize(name string, n uint32) bool
}

// apply sets the sizes of the maps of kinds in spec (maps the spec does not hold are another
// program's).
func (s MapSizes) apply(spec sizedSpec) {
	for kind, n := range s {
		for _, name := range mapKinds[kind] {
			spec.setSize(name, n)
		}
	}
}
