package ebpf

import (
	"slices"

	"github.com/rampart-sec/rampart/internal/ir"
)

// verdicts appends the entries of one endpoint, direction and identity: the port space of each
// protocol is cut at every boundary a rule of the endpoint's policies uses, each piece is
// decided once, and equal neighbours are merged before being encoded as prefixes.
func (t *Tables) verdicts(rs *ir.Ruleset, pod *ir.Pod, ep uint32, dir ir.Direction, id Identity, c class) {
	refs := rs.PoliciesFor(pod.ID, dir)
	for _, proto := range ir.Protocols {
		bounds := []int{0, 65536}
		for _, ref := range refs {
			for _, r := range rs.Policy(dir, ref).Rules {
				for _, pr := range r.Ports.Ranges {
					if pr.Protocol == proto {
						bounds = append(bounds, int(pr.First), int(pr.Last)+1)
					}
				}
				for _, n := range r.Ports.Named {
					for _, pk := range namedPorts(rs, pod, dir, c, n) {
						if pk.proto == proto {
							bounds = append(bounds, int(pk.port), int(pk.port)+1)
						}
					}
				}
			}
		}
		slices.Sort(bounds)
		bounds = slices.Compact(bounds)
		start, allow := 0, decide(rs, pod, dir, refs, c, proto, 0)
		for i := 1; i < len(bounds); i++ {
			next := 65536
			nextAllow := allow
			if bounds[i] < 65536 {
				next = bounds[i]
				nextAllow = decide(rs, pod, dir, refs, c, proto, uint16(next))
				if nextAllow == allow {
					continue
				}
			}
			for _, pfx := range rangePrefixes(start, next-1) {
				t.Policy = append(t.Policy, PolicyEntry{Endpoint: ep, Direction: dir, Identity: id, Protocol: proto, Port: pfx.port, PortBits: pfx.bits, Allow: allow})
			}
			start, allow = next, nextAllow
		}
	}
}

// namedPorts resolves a named port on the destination: the local pod for ingress, the remote
// class for egress.
func namedPorts(rs *ir.Ruleset, pod *ir.Pod, dir ir.Direction, c class, n ir.NamedPort) []portKey {
	if dir == ir.Egress {
		return c.named[n.Set]
	}
	var out []portKey
	for _, e := range rs.PortSets[n.Set].Entries {
		if slices.Contains(pod.IPs, e.IP) {
			out = append(out, portKey{e.Protocol, e.Port})
		}
	}
	return out
}

// decide walks the tiers for one (endpoint, remote class, protocol, port).
func decide(rs *ir.Ruleset, pod *ir.Pod, dir ir.Direction, refs []ir.PolicyRef, c class, proto ir.Protocol, port uint16) bool {
	matches := func(r *ir.Rule) bool {
		peer := r.AnyPeer
		for _, p := range r.Peers {
			peer = peer || c.in(p.Set)
		}
		if !peer {
			return false
		}
		if r.Ports.All {
			return true
		}
		for _, pr := range r.Ports.Ranges {
			if pr.Contains(proto, port) {
				return true
			}
		}
		for _, n := range r.Ports.Named {
			if slices.Contains(namedPorts(rs, pod, dir, c, n), portKey{proto, port}) {
				return true
			}
		}
		return false
	}
	tier := func(ref ir.PolicyRef) ir.TierKind { return rs.Tiers[dir][ref.Tier].Kind }
admin:
	for _, ref := range refs {
		if tier(ref) != ir.TierAdmin {
			continue
		}
		for _, r := range rs.Policy(dir, ref).Rules {
			if !matches(&r) {
				continue
			}
			switch r.Action {
			case ir.Allow:
				return true
			case ir.Deny:
				return false
			}
			break admin // Pass: on to NetworkPolicy
		}
	}
	isolated := false
	for _, ref := range refs {
		if tier(ref) != ir.TierNetworkPolicy {
			continue
		}
		isolated = true
		for _, r := range rs.Policy(dir, ref).Rules {
			if matches(&r) {
				return true
			}
		}
	}
	if isolated {
		return false
	}
	for _, ref := range refs {
		if tier(ref) != ir.TierBaseline {
			continue
		}
		for _, r := range rs.Policy(dir, ref).Rules {
			if matches(&r) {
				return r.Action == ir.Allow
			}
		}
	}
	return true
}

type portPrefix struct {
	port uint16
	bits uint8
}

// rangePrefixes covers [lo, hi] (0..65535) with the fewest prefixes of the 16-bit port space.
func rangePrefixes(lo, hi int) []portPrefix {
	var out []portPrefix
	for lo <= hi {
		size := 1
		for bits := 0; bits < 16; bits++ {
			s := size << 1
			if lo%s != 0 || lo+s-1 > hi {
				break
			}
			size = s
		}
		b := 16
		for x := size; x > 1; x >>= 1 {
			b--
		}
		out = append(out, portPrefix{uint16(lo), uint8(b)})
		lo += size
	}
	return out
}
