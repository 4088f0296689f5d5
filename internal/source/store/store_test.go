package store

import (
	"context"
	"errors"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rampart-sec/rampart/internal/model"
)

func ns(name string) model.Object {
	return model.Object{Kind: model.KindNamespace, Obj: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}}
}

func TestUpdateIsCopyOnWrite(t *testing.T) {
	s := New(model.NewCluster())
	before, rev0 := s.Snapshot()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := s.Subscribe(ctx)
	rev, err := s.Update(func(c *model.Cluster) error { c.Apply(ns("a")); return nil })
	if err != nil || rev != rev0+1 {
		t.Fatalf("Update: rev %d, %v", rev, err)
	}
	if len(before.Namespaces) != 0 {
		t.Fatal("the earlier snapshot changed")
	}
	select {
	case <-ch:
	default:
		t.Fatal("no notification")
	}
	// A failing update publishes nothing and notifies nobody.
	if _, err := s.Update(func(c *model.Cluster) error { c.Apply(ns("b")); return errors.New("no") }); err == nil {
		t.Fatal("want the error")
	}
	c, r := s.Snapshot()
	if r != rev || len(c.Namespaces) != 1 {
		t.Fatalf("after a failed update: rev %d, %d namespaces", r, len(c.Namespaces))
	}
	select {
	case <-ch:
		t.Fatal("notified of a failed update")
	default:
	}
}

func TestConcurrentUpdatesAllLand(t *testing.T) {
	s := New(model.NewCluster())
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = s.Update(func(c *model.Cluster) error { c.Apply(ns(string(rune('a'+i%26)) + string(rune('a'+i/26)))); return nil })
		}()
	}
	wg.Wait()
	c, rev := s.Snapshot()
	if len(c.Namespaces) != 50 || rev != 51 {
		t.Fatalf("%d namespaces at revision %d, want 50 at 51", len(c.Namespaces), rev)
	}
}
