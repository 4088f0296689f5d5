package ring

import (
	"slices"
	"testing"
)

func TestBuffer(t *testing.T) {
	for _, tc := range []struct {
		size, adds int
		want       []int
	}{
		{size: 3, adds: 0, want: nil},
		{size: 3, adds: 2, want: []int{0, 1}},
		{size: 3, adds: 3, want: []int{0, 1, 2}},
		{size: 3, adds: 7, want: []int{4, 5, 6}},
		{size: 100, adds: 250, want: seq(150, 250)},
		{size: 1, adds: 5, want: []int{4}},
	} {
		b := New[int](tc.size)
		for i := 0; i < tc.adds; i++ {
			b.Add(i)
		}
		var got []int
		b.Each(func(v *int) bool { got = append(got, *v); return true })
		if !slices.Equal(got, tc.want) {
			t.Errorf("size %d, %d added: %v, want %v", tc.size, tc.adds, got, tc.want)
		}
		if b.Len() != len(tc.want) {
			t.Errorf("size %d, %d added: Len %d, want %d", tc.size, tc.adds, b.Len(), len(tc.want))
		}
		if cap(b.vals) > tc.size {
			t.Errorf("size %d: capacity grew to %d", tc.size, cap(b.vals))
		}
	}
	// Each stops when asked.
	b := New[int](4)
	for i := range 4 {
		b.Add(i)
	}
	n := 0
	b.Each(func(*int) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("Each went on after false: %d calls", n)
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}
