package iptables

import (
	"net/netip"
	"slices"
	"testing"
)

// TestCtOrigDst reads the original destination from an NFLOG message's conntrack attribute as
// the kernel nests it (ctnetlink tuples, nested-flagged), not the reply tuple's.
func TestCtOrigDst(t *testing.T) {
	const nested = 0x8000
	tuple := func(typ uint16, src, dst string, sport, dport uint16) []byte {
		ip := slices.Concat(attr(1, netip.MustParseAddr(src).AsSlice()), attr(ctaIPv4Dst, netip.MustParseAddr(dst).AsSlice()))
		proto := slices.Concat(attr(1, []byte{6}), attr(2, be16(sport)), attr(ctaProtoDstPort, be16(dport)))
		return attr(typ|nested, slices.Concat(attr(ctaTupleIP|nested, ip), attr(ctaTupleProto|nested, proto)))
	}
	const ctaTupleReply = 2
	for _, tc := range []struct {
		name string
		ct   []byte
		want netip.AddrPort
	}{
		{"service", slices.Concat(tuple(ctaTupleOrig, "10.0.0.1", "10.96.0.10", 40000, 8080), tuple(ctaTupleReply, "10.0.0.2", "10.0.0.1", 80, 40000), attr(3, be32(0x188))),
			netip.MustParseAddrPort("10.96.0.10:8080")},
		{"reply first", slices.Concat(tuple(ctaTupleReply, "10.0.0.2", "10.0.0.1", 80, 40000), tuple(ctaTupleOrig, "10.0.0.1", "10.0.0.2", 40000, 80)),
			netip.MustParseAddrPort("10.0.0.2:80")},
		{"no original tuple", tuple(ctaTupleReply, "10.0.0.2", "10.0.0.1", 80, 40000), netip.AddrPort{}},
		{"truncated", tuple(ctaTupleOrig, "10.0.0.1", "10.96.0.10", 40000, 8080)[:20], netip.AddrPort{}},
	} {
		if got := ctOrigDst(tc.ct); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
