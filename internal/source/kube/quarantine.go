package kube

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/rampart-sec/rampart/internal/model"
)

// Quarantine annotates a pod through the API server (model.QuarantinePatch): on quarantines
// it on every node, off releases it (an automatic quarantine begun before now too). It returns
// the resourceVersion of the write.
func Quarantine(ctx context.Context, cs kubernetes.Interface, ns, name string, on bool, now time.Time) (string, error) {
	verb := "quarantine"
	if !on {
		verb = "release"
	}
	p, err := cs.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, model.QuarantinePatch(on, now), metav1.PatchOptions{FieldManager: "rampart"})
	if err != nil {
		return "", fmt.Errorf("%s pod %s/%s: %w", verb, ns, name, err)
	}
	return p.ResourceVersion, nil
}
