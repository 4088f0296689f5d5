package ir

import (
	"math/rand"
	"net/netip"
	"testing"
)

func TestBlockPrefixes(t *testing.T) {
	tests := []struct {
		cidr   string
		except []string
		want   int
	}{
		{"10.0.0.0/8", nil, 1},
		{"10.0.0.0/8", []string{"10.0.0.0/9"}, 1},
		{"10.0.0.0/8", []string{"10.1.2.3/32"}, 24},
		{"0.0.0.0/0", []string{"10.0.0.0/8", "10.1.0.0/16"}, 8}, // nested exception adds nothing
		{"10.0.0.0/24", []string{"10.0.0.0/25", "10.0.0.128/25"}, 0},
		{"2001:db8::/32", []string{"2001:db8::1/128"}, 96},
	}
	for _, tc := range tests {
		b := Block{CIDR: netip.MustParsePrefix(tc.cidr)}
		for _, e := range tc.except {
			b.Except = append(b.Except, netip.MustParsePrefix(e))
		}
		got := b.Prefixes()
		if len(got) != tc.want {
			t.Errorf("%s except %v: %d prefixes %v, want %d", tc.cidr, tc.except, len(got), got, tc.want)
		}
	}
}

// TestBlockPrefixesExact: membership through the prefixes equals Block.Contains, on random
// blocks and addresses around their edges.
func TestBlockPrefixesExact(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	rnd := func(base [4]byte, bits int) netip.Prefix {
		a := base
		for i := range a {
			a[i] ^= byte(r.Intn(256)) & byte(r.Intn(2)*0xff)
		}
		return netip.PrefixFrom(netip.AddrFrom4(a), bits).Masked()
	}
	for i := 0; i < 2000; i++ {
		base := [4]byte{10, byte(r.Intn(4)), byte(r.Intn(4)), byte(r.Intn(256))}
		b := Block{CIDR: rnd(base, 8+r.Intn(16))}
		for j := r.Intn(4); j > 0; j-- {
			b.Except = append(b.Except, rnd(base, b.CIDR.Bits()+1+r.Intn(32-b.CIDR.Bits())))
		}
		ps := b.Prefixes()
		for k := 0; k < 50; k++ {
			ip := rnd(base, 32).Addr()
			if k%2 == 0 && len(b.Except) > 0 {
				ip = b.Except[k%len(b.Except)].Addr()
			}
			in := false
			for _, p := range ps {
				in = in || p.Contains(ip)
			}
			if in != b.Contains(ip) {
				t.Fatalf("%v except %v, ip %v: prefixes say %v, Contains says %v", b.CIDR, b.Except, ip, in, b.Contains(ip))
			}
		}
	}
}
