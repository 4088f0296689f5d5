// Package store is an in-process Source: a revisioned, copy-on-write cluster that its owner
// changes directly (the lab controller, or manifests loaded by the CLI). Every published
// cluster is immutable, so agents read snapshots without locks or copies.
package store

import (
	"context"
	"sync"
	"time"

	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/source"
)

// Store implements source.Source.
type Store struct {
	*source.Notifier
	wmu    sync.Mutex // serialises writers, so an Update never loses a concurrent one
	mu     sync.Mutex // guards c and rev
	c      *model.Cluster
	rev    uint64
	synced chan struct{}
	since  time.Time
}

var _ source.Source = (*Store)(nil)

// New returns a store holding c (which it now owns) at revision 1.
func New(c *model.Cluster) *Store {
	s := &Store{Notifier: source.NewNotifier(), c: c, rev: 1, synced: make(chan struct{}), since: time.Now()}
	close(s.synced)
	return s
}

// Publish replaces the cluster with c, which must not be modified afterwards, and returns the
// new revision.
func (s *Store) Publish(c *model.Cluster) uint64 {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.publishLocked(c)
}

// publishLocked publishes c; the caller holds wmu.
func (s *Store) publishLocked(c *model.Cluster) uint64 {
	s.mu.Lock()
	s.c = c
	s.rev++
	rev := s.rev
	s.mu.Unlock()
	s.Notify()
	return rev
}

// Update applies fn to a copy of the cluster and publishes it; when fn fails nothing changes.
func (s *Store) Update(fn func(c *model.Cluster) error) (uint64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cur, _ := s.Snapshot()
	next := cur.Clone()
	if err := fn(next); err != nil {
		return 0, err
	}
	return s.publishLocked(next), nil
}

// Run returns when ctx ends: the store is changed by its owner, not by watching.
func (s *Store) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Synced is closed from the start.
func (s *Store) Synced() <-chan struct{} { return s.synced }

// Snapshot returns the cluster and its revision.
func (s *Store) Snapshot() (*model.Cluster, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c, s.rev
}

// Status is always connected.
func (s *Store) Status() source.Status { return source.Status{Connected: true, Since: s.since} }
