package ir

import "testing"

func TestProtocolOf(t *testing.T) {
	for _, tc := range []struct {
		n    uint8
		want Protocol
		ok   bool
	}{{6, TCP, true}, {17, UDP, true}, {132, SCTP, true}, {1, 0, false}, {0, 0, false}, {58, 0, false}} {
		if got, ok := ProtocolOf(tc.n); got != tc.want || ok != tc.ok {
			t.Errorf("ProtocolOf(%d) = %v, %v; want %v, %v", tc.n, got, ok, tc.want, tc.ok)
		}
	}
}
