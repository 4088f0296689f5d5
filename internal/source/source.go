// Package source defines where a node agent reads cluster state from: a Source keeps an
// up-to-date, revisioned view of the objects the model knows (Namespaces, Nodes, Pods, Services,
// EndpointSlices and the policy kinds) and tells subscribers when it changed. kube/ implements
// it with client-go informers against an API server; store/ is an in-process store (the lab's,
// and manifests for the CLI).
package source

import (
	"context"
	"time"

	"github.com/rampart-sec/rampart/internal/model"
)

// Source is cluster state for an agent.
type Source interface {
	// Run keeps the state current until ctx ends.
	Run(ctx context.Context) error
	// Synced is closed once the state is complete for the first time (every initial list
	// done); before that a Snapshot may lack objects and must not be enforced.
	Synced() <-chan struct{}
	// Snapshot returns the current objects and their revision. The cluster is shared and
	// immutable: callers must not modify it. Revisions only grow; a later Snapshot with the
	// same revision holds the same objects.
	Snapshot() (*model.Cluster, uint64)
	// Subscribe returns a channel that receives after every change (changes pending a receive
	// coalesce into one) until ctx ends.
	Subscribe(ctx context.Context) <-chan struct{}
	// Status says whether the source is in touch with what it mirrors.
	Status() Status
}

// Status is a source's connection.
type Status struct {
	Connected bool
	// Since is when Connected last changed.
	Since time.Time
	// Err is the last error seen while disconnected.
	Err string
}

// Notifier fans change notifications out to subscribers; implementations of Source embed it.
type Notifier struct {
	subs chan map[chan struct{}]struct{} // a lock that can be taken in a select-free way
}

// NewNotifier returns a notifier with no subscribers.
func NewNotifier() *Notifier {
	n := &Notifier{subs: make(chan map[chan struct{}]struct{}, 1)}
	n.subs <- map[chan struct{}]struct{}{}
	return n
}

// Subscribe registers a channel until ctx ends.
func (n *Notifier) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	m := <-n.subs
	m[ch] = struct{}{}
	n.subs <- m
	go func() {
		<-ctx.Done()
		m := <-n.subs
		delete(m, ch)
		n.subs <- m
	}()
	return ch
}

// Notify tells every subscriber, without blocking.
func (n *Notifier) Notify() {
	m := <-n.subs
	for ch := range m {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	n.subs <- m
}
