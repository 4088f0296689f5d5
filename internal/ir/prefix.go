package ir

import "net/netip"

// Prefixes returns the set as plain prefixes (no exceptions): each IP as a host prefix, and each
// block's CIDR minus its exceptions split into the prefixes that remain. Membership is exact:
// an address is in the set if and only if some returned prefix contains it. Prefixes may
// overlap across blocks, which neither ipset hash:net nor an LPM trie minds.
func (s *AddrSet) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, ip := range s.IPs {
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	for _, b := range s.Blocks {
		out = append(out, b.Prefixes()...)
	}
	return out
}

// Prefixes returns the block's CIDR minus its exceptions as disjoint prefixes. Each exception
// splits at most one prefix per bit of length difference, so the result stays small.
func (b Block) Prefixes() []netip.Prefix {
	remaining := []netip.Prefix{b.CIDR.Masked()}
	for _, e := range b.Except {
		var next []netip.Prefix
		for _, p := range remaining {
			next = append(next, subtract(p, e.Masked())...)
		}
		remaining = next
	}
	return remaining
}

// subtract returns p minus e as disjoint prefixes.
func subtract(p, e netip.Prefix) []netip.Prefix {
	if !p.Overlaps(e) {
		return []netip.Prefix{p}
	}
	if e.Bits() <= p.Bits() { // e covers p
		return nil
	}
	// e lies strictly inside p: split p in halves, keep the half without e whole.
	lo, hi := halves(p)
	if lo.Contains(e.Addr()) {
		return append(subtract(lo, e), hi)
	}
	return append([]netip.Prefix{lo}, subtract(hi, e)...)
}

func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	idx := p.Bits() / 8
	b[idx] |= 0x80 >> (p.Bits() % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits)
}
