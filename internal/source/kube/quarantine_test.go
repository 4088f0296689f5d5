package kube

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rampart-sec/rampart/internal/model"
)

func TestQuarantinePatch(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web", Annotations: map[string]string{"keep": "me"}}})
	now := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	get := func() *corev1.Pod {
		p, err := cs.CoreV1().Pods("app").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := Quarantine(ctx, cs.CoreV1().Pods("app"), "app", "web", true, now); err != nil {
		t.Fatal(err)
	}
	if p := get(); !model.IsQuarantined(model.PodFrom(p)) || p.Annotations["keep"] != "me" {
		t.Fatalf("after quarantine: %v", p.Annotations)
	}
	if _, err := Quarantine(ctx, cs.CoreV1().Pods("app"), "app", "web", false, now); err != nil {
		t.Fatal(err)
	}
	if p := get(); model.IsQuarantined(model.PodFrom(p)) || !model.ReleasedAt(model.PodFrom(p)).Equal(now) || p.Annotations["keep"] != "me" {
		t.Fatalf("after release: %v", p.Annotations)
	}
	if _, err := Quarantine(ctx, cs.CoreV1().Pods("app"), "app", "nope", true, now); err == nil {
		t.Fatal("quarantined a pod that does not exist")
	}
}
