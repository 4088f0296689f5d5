package ebpf

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
)

// Identity numbers a class of remote addresses that every rule treats alike.
type Identity uint32

// IPCacheEntry maps a prefix to the identity of the addresses it covers (longest prefix wins).
type IPCacheEntry struct {
	Prefix   netip.Prefix
	Identity Identity
}

// PolicyEntry is one verdict: for endpoint, direction, remote identity and protocol, the
// destination ports matching Port/PortBits (the top PortBits bits of Port).
type PolicyEntry struct {
	Endpoint  uint32
	Direction ir.Direction
	Identity  Identity
	Protocol  ir.Protocol
	Port      uint16
	PortBits  uint8
	Allow     bool
	Rule      uint32 // the deciding rule (Rules), 0: none
}

// Tables is everything the programs look up.
type Tables struct {
	IPCache []IPCacheEntry
	// Endpoints numbers the local pods (by address: endpointID).
	Endpoints map[ir.PodID]uint32
	// Selected says which (endpoint, direction) have policy; the others allow everything.
	Selected map[[2]uint32]bool
	// Policy holds the verdict entries of tables made by hand; a Builder's are in sides
	// (PolicyEntries reads either).
	Policy []PolicyEntry
	// Rules numbers the rules that Policy entries name.
	Rules *flow.RuleTable
	// sides are the entries by endpoint and direction, each the slice the Builder made or
	// reused for it (a side whose slice is the last build's is unchanged), sized exactly: an
	// unchanged side is kept across builds, so one flat slice would keep every old one alive.
	sides []side
}

// PolicyEntries returns every verdict entry.
func (t *Tables) PolicyEntries() []PolicyEntry {
	if len(t.sides) == 0 {
		return t.Policy
	}
	var out []PolicyEntry
	for _, s := range t.sides {
		out = append(out, s.entries...)
	}
	return out
}

type side struct {
	ep      uint32
	dir     ir.Direction
	entries []PolicyEntry
}

// class is what distinguishes remote addresses: the address sets holding them and, per
// named-port set, the (protocol, port) resolutions of the address.
type class struct {
	sets  []ir.SetID
	named map[ir.SetID][]portKey
}

type portKey struct {
	proto ir.Protocol
	port  uint16
}

// key tells classes apart within one build (set ids are the build's own).
func (c class) key() string {
	b := make([]byte, 0, 4*len(c.sets)+8)
	for _, s := range c.sets {
		b = binary.LittleEndian.AppendUint32(b, uint32(s))
	}
	if len(c.named) == 0 {
		return string(b)
	}
	b = append(b, 0xff, 0xff, 0xff, 0xff) // no set id is -1
	for _, id := range slices.Sorted(maps.Keys(c.named)) {
		b = binary.LittleEndian.AppendUint32(b, uint32(id))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(c.named[id])))
		for _, pk := range c.named[id] {
			b = append(b, byte(pk.proto))
			b = binary.LittleEndian.AppendUint16(b, pk.port)
		}
	}
	return string(b)
}

// stableKey names a class the same way in every build: by the names of its sets, which derive
// from what the sets select.
func (c class) stableKey(rs *ir.Ruleset) string {
	names := make([]string, 0, len(c.sets)+len(c.named))
	for _, s := range c.sets {
		names = append(names, rs.Sets[s].Name)
	}
	for id, pks := range c.named {
		var b strings.Builder
		b.WriteString(rs.PortSets[id].Name + ":")
		for _, pk := range pks {
			b.WriteString(strconv.Itoa(int(pk.proto)) + "/" + strconv.Itoa(int(pk.port)) + ",")
		}
		names = append(names, b.String())
	}
	slices.Sort(names)
	return strings.Join(names, ";")
}

// Builder builds the tables of one node again and again, keeping the numbers it gave out
// (remote identities, rules; an endpoint's is its address) for what is still there: between two builds only what
// changed gets other entries, so the dataplane writes only the difference. Build without a
// Builder numbers afresh.
type Builder struct {
	identities numbering[string]
	rules      *flow.RuleTable
	// last are the identities of the last build and the sets they were computed from: most
	// changes (a policy's ports, rules naming peers already named) leave every set as it was,
	// and then the identities are too.
	last *identityMemo
	// verdicts are the last build's entries of each endpoint and direction, with the key of
	// the rules they were decided from: with the same identities and rules, an endpoint's
	// entries are the same (a change touches the endpoints its policies select).
	verdicts map[[2]uint32]sideVerdicts
}

type sideVerdicts struct {
	rules   string // podRules.key
	entries []PolicyEntry
}

// identityMemo is what the identities of a build were computed from, and what they were.
type identityMemo struct {
	sets     map[string]*ir.AddrSet // by name
	portSets map[string]*ir.PortSet
	setNames []string // by the build's set id
	portName []string // by the build's port set id
	classes  []identified
	ipcache  []IPCacheEntry
}

// reuse returns the memoized identities if rs has the same sets (by name and content) as the
// build they were computed for, with set ids translated to rs's.
func (m *identityMemo) reuse(rs *ir.Ruleset) ([]identified, bool) {
	if m == nil || len(rs.Sets) != len(m.sets) || len(rs.PortSets) != len(m.portSets) {
		return nil, false
	}
	setID := make(map[string]ir.SetID, len(rs.Sets))
	sameIDs := true // every set has the id it had: the classes hold as they are
	for i := range rs.Sets {
		s := &rs.Sets[i]
		old, ok := m.sets[s.Name]
		if !ok || !sameAddrs(old.IPs, s.IPs) || !slices.EqualFunc(old.Blocks, s.Blocks, func(a, b ir.Block) bool {
			return a.CIDR == b.CIDR && slices.Equal(a.Except, b.Except)
		}) {
			return nil, false
		}
		setID[s.Name] = s.ID
		sameIDs = sameIDs && int(s.ID) < len(m.setNames) && m.setNames[s.ID] == s.Name
	}
	portID := make(map[string]ir.SetID, len(rs.PortSets))
	for i := range rs.PortSets {
		s := &rs.PortSets[i]
		old, ok := m.portSets[s.Name]
		if !ok || !slices.Equal(old.Entries, s.Entries) {
			return nil, false
		}
		portID[s.Name] = s.ID
		sameIDs = sameIDs && int(s.ID) < len(m.portName) && m.portName[s.ID] == s.Name
	}
	if sameIDs {
		return m.classes, true // never written after they are built
	}
	out := make([]identified, len(m.classes))
	for i, c := range m.classes {
		n := class{sets: make([]ir.SetID, len(c.class.sets)), named: make(map[ir.SetID][]portKey, len(c.class.named))}
		for j, id := range c.class.sets {
			n.sets[j] = setID[m.setNames[id]]
		}
		slices.Sort(n.sets)
		for id, pks := range c.class.named {
			n.named[portID[m.portName[id]]] = pks
		}
		out[i] = identified{class: n, id: c.id}
	}
	return out, true
}

// sameAddrs compares two address lists, at once when they are the same slice (a compiler that
// reuses its selections hands unchanged sets over so).
func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// remember memoizes the identities computed for rs.
func (b *Builder) remember(rs *ir.Ruleset, classes []identified, ipcache []IPCacheEntry) {
	m := &identityMemo{sets: make(map[string]*ir.AddrSet, len(rs.Sets)), portSets: make(map[string]*ir.PortSet, len(rs.PortSets)),
		classes: classes, ipcache: ipcache}
	for i := range rs.Sets {
		m.sets[rs.Sets[i].Name] = &rs.Sets[i]
		m.setNames = append(m.setNames, rs.Sets[i].Name)
	}
	for i := range rs.PortSets {
		m.portSets[rs.PortSets[i].Name] = &rs.PortSets[i]
		m.portName = append(m.portName, rs.PortSets[i].Name)
	}
	b.last = m
}

// Build computes the tables for the pods local reports true for (IPv4 only, as the lab).
func Build(rs *ir.Ruleset, local func(*ir.Pod) bool) (*Tables, error) {
	return new(Builder).Build(rs, local)
}

// Build computes the tables for the pods local reports true for, numbering what the previous
// build numbered as it did.
func (b *Builder) Build(rs *ir.Ruleset, local func(*ir.Pod) bool) (*Tables, error) {
	rules := flow.NextRuleTable(rs, b.rules)
	t := &Tables{Endpoints: map[ir.PodID]uint32{}, Selected: map[[2]uint32]bool{}, Rules: rules}
	classes, sameIdentities := b.last.reuse(rs)
	if sameIdentities {
		t.IPCache = b.last.ipcache
	} else {
		classes = t.identities(rs, &b.identities)
	}
	b.remember(rs, classes, t.IPCache)
	verdicts := map[[2]uint32]sideVerdicts{}
	var scratch []PolicyEntry
	for i := range rs.Pods {
		p := &rs.Pods[i]
		if p.HostNetwork || !local(p) || len(p.IPs) == 0 {
			continue
		}
		ep := endpointID(p.IP())
		t.Endpoints[p.ID] = ep
		for _, dir := range []ir.Direction{ir.Ingress, ir.Egress} {
			if len(rs.PoliciesFor(p.ID, dir)) == 0 {
				continue
			}
			id := [2]uint32{ep, uint32(dir)}
			t.Selected[id] = true
			pr := rulesFor(rs, p, dir)
			v := sideVerdicts{rules: pr.key(rs, rules, p)}
			// The same address is the same endpoint number, so the entries can be taken as they are.
			if last, ok := b.verdicts[id]; ok && sameIdentities && last.rules == v.rules {
				v.entries = last.entries
			} else {
				t.Policy = scratch[:0] // verdicts appends here
				for _, c := range classes {
					t.verdicts(rs, p, ep, dir, c.id, c.class, pr)
				}
				v.entries, scratch, t.Policy = slices.Clone(t.Policy), t.Policy, nil
			}
			verdicts[id] = v
			t.sides = append(t.sides, side{ep: ep, dir: dir, entries: v.entries})
		}
	}
	b.rules, b.verdicts = rules, verdicts
	return t, nil
}

// endpointID numbers a local pod by its address: the same in every build and in every agent
// process, so conntrack entries (keyed by endpoint) pinned by an agent that was restarted still
// name the same pods. Never 0 (no pod has 0.0.0.0).
func endpointID(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// numbering gives keys small numbers from first on, keeps a key's number while the key is
// there, and gives the numbers of keys gone to new ones.
type numbering[K comparable] struct {
	first uint32
	ids   map[K]uint32
}

// assign numbers keys (equal keys alike), keeping the numbers of keys numbered before; keys
// not among them lose theirs.
func (n *numbering[K]) assign(keys []K) []uint32 {
	out := make([]uint32, len(keys))
	ids := make(map[K]uint32, len(keys))
	used := map[uint32]bool{}
	var fresh []int
	for i, k := range keys {
		if id, ok := n.ids[k]; ok {
			out[i], ids[k], used[id] = id, id, true
			continue
		}
		fresh = append(fresh, i)
	}
	next := n.first
	for _, i := range fresh {
		if id, ok := ids[keys[i]]; ok {
			out[i] = id
			continue
		}
		for used[next] {
			next++
		}
		out[i], ids[keys[i]], used[next] = next, next, true
	}
	n.ids = ids
	return out
}

// identities partitions the IPv4 space: every address's class is decided by the longest prefix,
// among all prefixes any set uses, that contains it (a shorter prefix containing the address
// contains the longer one too). Identities are numbered by ids, which keeps a class's number
// from one build to the next. Returns each class with its identity.
func (t *Tables) identities(rs *ir.Ruleset, ids *numbering[string]) []identified {
	type member struct {
		set   ir.SetID
		named *ir.IPPort // for named-port sets
	}
	members := map[netip.Prefix][]member{}
	for i := range rs.Sets {
		for _, p := range rs.Sets[i].Prefixes() {
			if p = p.Masked(); p.Addr().Is4() {
				members[p] = append(members[p], member{set: rs.Sets[i].ID})
			}
		}
	}
	for i := range rs.PortSets {
		for j := range rs.PortSets[i].Entries {
			e := &rs.PortSets[i].Entries[j]
			if e.IP.Is4() {
				p := netip.PrefixFrom(e.IP, 32)
				members[p] = append(members[p], member{set: rs.PortSets[i].ID, named: e})
			}
		}
	}
	root := netip.MustParsePrefix("0.0.0.0/0")
	if _, ok := members[root]; !ok {
		members[root] = nil
	}
	prefixes := make([]netip.Prefix, 0, len(members))
	for p := range members {
		prefixes = append(prefixes, p)
	}
	sort.Slice(prefixes, func(i, j int) bool {
		if prefixes[i].Bits() != prefixes[j].Bits() {
			return prefixes[i].Bits() < prefixes[j].Bits()
		}
		return prefixes[i].Addr().Less(prefixes[j].Addr())
	})

	byKey := map[string]int{} // class key -> index in classes
	var classes []class
	classOf := make([]int, len(prefixes))
	for pi, p := range prefixes {
		c := class{named: map[ir.SetID][]portKey{}}
		seen := map[ir.SetID]bool{}
		// Every prefix containing p (p itself included) contributes its sets: its ancestors,
		// found by masking p to each shorter length (33 lookups, not a scan of all prefixes).
		for bits := 0; bits <= p.Bits(); bits++ {
			q := netip.PrefixFrom(p.Addr(), bits).Masked()
			for _, m := range members[q] {
				if m.named != nil {
					c.named[m.set] = append(c.named[m.set], portKey{m.named.Protocol, m.named.Port})
					continue
				}
				if !seen[m.set] {
					seen[m.set] = true
					c.sets = append(c.sets, m.set)
				}
			}
		}
		slices.Sort(c.sets)
		for id := range c.named {
			slices.SortFunc(c.named[id], func(a, b portKey) int {
				if a.proto != b.proto {
					return int(a.proto) - int(b.proto)
				}
				return int(a.port) - int(b.port)
			})
		}
		k := c.key()
		ci, ok := byKey[k]
		if !ok {
			ci = len(classes)
			byKey[k] = ci
			classes = append(classes, c)
		}
		classOf[pi] = ci
	}
	keys := make([]string, len(classes))
	for i, c := range classes {
		keys[i] = c.stableKey(rs)
	}
	nums := ids.assign(keys)
	out := make([]identified, len(classes))
	for i, c := range classes {
		out[i] = identified{class: c, id: Identity(nums[i])}
	}
	for pi, p := range prefixes {
		t.IPCache = append(t.IPCache, IPCacheEntry{Prefix: p, Identity: out[classOf[pi]].id})
	}
	return out
}

// identified is a class and its identity.
type identified struct {
	class class
	id    Identity
}
