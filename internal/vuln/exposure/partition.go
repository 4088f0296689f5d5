package exposure

import (
	"net/netip"
	"sort"

	"github.com/rampart-sec/rampart/internal/ir"
)

// span is an interval of addresses outside the cluster that every policy treats alike: no
// ipBlock or network boundary falls inside it. rep is one of its addresses that is no pod's or
// node's (those are judged as pods, not as the outside world).
type span struct {
	lo, hi netip.Addr
	rep    netip.Addr
	public bool
}

// nonPublic are the ranges that are not reachable from the internet (RFC 1918, CGNAT,
// loopback, link-local, multicast, reserved; IPv6 outside 2000::/3 and ULA).
var nonPublic = map[bool][]netip.Prefix{
	false: prefixes("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/3"),
	true: prefixes("::/3", "4000::/2", "8000::/1", "fc00::/7", "2001:db8::/32"),
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// partition cuts the address family at every ipBlock/network boundary in the rule set (and at
// the public/non-public boundaries), so that one verdict per span decides the whole span.
func partition(rs *ir.Ruleset, v6 bool) []span {
	first := netip.IPv4Unspecified()
	if v6 {
		first = netip.IPv6Unspecified()
	}
	cuts := map[netip.Addr]bool{first: true}
	addPrefix := func(p netip.Prefix) {
		if p.Addr().Is6() != v6 || (p.Addr().Is4In6()) {
			return
		}
		p = p.Masked()
		cuts[p.Addr()] = true
		if next := lastAddr(p).Next(); next.IsValid() {
			cuts[next] = true
		}
	}
	for _, s := range rs.Sets {
		for _, b := range s.Blocks {
			addPrefix(b.CIDR)
			for _, e := range b.Except {
				addPrefix(e)
			}
		}
	}
	for _, p := range nonPublic[v6] {
		addPrefix(p)
	}
	cluster := map[netip.Addr]bool{}
	for _, p := range rs.Pods {
		for _, ip := range p.IPs {
			cluster[ip] = true
		}
	}
	for _, n := range rs.Nodes {
		for _, ip := range n.IPs {
			cluster[ip] = true
		}
	}
	sorted := make([]netip.Addr, 0, len(cuts))
	for a := range cuts {
		sorted = append(sorted, a)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Less(sorted[j]) })
	last := lastAddr(netip.PrefixFrom(first, 0))
	var out []span
	for i, lo := range sorted {
		hi := last
		if i+1 < len(sorted) {
			hi = sorted[i+1].Prev()
		}
		rep, ok := lo, true
		for cluster[rep] {
			if rep == hi {
				ok = false
				break
			}
			rep = rep.Next()
		}
		if !ok {
			continue // the whole span is cluster addresses
		}
		out = append(out, span{lo: lo, hi: hi, rep: rep, public: !inAny(rep, nonPublic[v6])})
	}
	return out
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// describeSpans merges adjacent spans and writes them as CIDRs ("0.0.0.0/0" for everything).
func describeSpans(spans []span) []string {
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo.Less(spans[j].lo) })
	var out []string
	for i := 0; i < len(spans); {
		lo, hi := spans[i].lo, spans[i].hi
		j := i + 1
		for j < len(spans) && hi.Next() == spans[j].lo {
			hi = spans[j].hi
			j++
		}
		for _, p := range rangePrefixes(lo, hi) {
			out = append(out, p.String())
		}
		i = j
	}
	return out
}

// rangePrefixes covers [lo, hi] with the fewest prefixes.
func rangePrefixes(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for {
		var p netip.Prefix
		for bits := 0; bits <= lo.BitLen(); bits++ {
			c := netip.PrefixFrom(lo, bits)
			if c.Masked().Addr() == lo && !hi.Less(lastAddr(c)) {
				p = c
				break
			}
		}
		out = append(out, p)
		end := lastAddr(p)
		if end == hi || !end.Next().IsValid() {
			return out
		}
		lo = end.Next()
	}
}
