package policy

import "testing"

// FuzzParsePorts: never panics; every parsed port is in range with a known protocol.
func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"80/TCP,81/UDP", "53", "1/sctp", "0", "65536", "80/ICMP", ",,", "80/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePorts(s)
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Port == 0 || p.Protocol.String() == "any" {
				t.Fatalf("%q parsed to %v", s, p)
			}
		}
	})
}
