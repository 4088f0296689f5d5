// Package ring is a bounded buffer keeping the last values added (older ones make room). Its
// memory grows with what it holds, up to its size, so an agent that records little holds little.
package ring

// Buffer keeps the last Size values added. The zero Buffer holds nothing; it is not safe for
// concurrent use.
type Buffer[T any] struct {
	size int
	vals []T
	next int // where the next value goes once full
}

// New returns a buffer of the last size values (size > 0).
func New[T any](size int) *Buffer[T] { return &Buffer[T]{size: size} }

// Add keeps v, making room by dropping the oldest value when full.
func (b *Buffer[T]) Add(v T) {
	if len(b.vals) < b.size {
		if len(b.vals) == cap(b.vals) {
			// Grow by doubling, but never past size.
			grown := make([]T, len(b.vals), min(b.size, max(2*cap(b.vals), 64)))
			copy(grown, b.vals)
			b.vals = grown
		}
		b.vals = append(b.vals, v)
		return
	}
	b.vals[b.next] = v
	b.next = (b.next + 1) % b.size
}

// Len is how many values it holds.
func (b *Buffer[T]) Len() int { return len(b.vals) }

// Each calls f with each value, oldest first, until f returns false.
func (b *Buffer[T]) Each(f func(*T) bool) {
	n := len(b.vals)
	for i := 0; i < n; i++ {
		if !f(&b.vals[(b.next+i)%n]) {
			return
		}
	}
}
