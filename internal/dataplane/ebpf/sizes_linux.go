package ebpf

import (
	"strings"

	"github.com/cilium/ebpf"
)

// collSpec sizes the maps of a cilium/ebpf collection spec.
type collSpec struct{ *ebpf.CollectionSpec }

func (c collSpec) setSize(name string, n uint32) bool {
	m, ok := c.Maps[name]
	if !ok {
		return false
	}
	m.MaxEntries = n
	// A slot's map (services0) goes into an array of maps (services) whose inner template must
	// have its size.
	if outer, ok := c.Maps[strings.TrimRight(name, "01")]; ok && outer.InnerMap != nil && outer != m {
		outer.InnerMap.MaxEntries = n
	}
	return true
}
