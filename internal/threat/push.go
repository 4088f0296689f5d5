package threat

// kernelState is what the engine last gave the kernel of one response (blocks, limits,
// quarantine, shields), so that only a change is pushed and a refused push is tried again.
type kernelState[T any] struct {
	sent   T
	given  bool // sent is what the kernel holds
	failed bool // the kernel refused the last push: the next one tries again
}

// push gives the kernel want through set, unless it holds that already.
func (k *kernelState[T]) push(want T, equal func(a, b T) bool, set func(T) error) error {
	if k.given && !k.failed && equal(want, k.sent) {
		return nil
	}
	if err := set(want); err != nil {
		k.failed = true // every Configure tries again
		return err
	}
	k.sent, k.given, k.failed = want, true, false
	return nil
}
