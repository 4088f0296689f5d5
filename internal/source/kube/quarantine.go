package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rampart-sec/rampart/internal/model"
)

// PodPatcher patches the pods of one namespace: client-go's typed client
// (CoreV1().Pods(namespace)) is one.
type PodPatcher interface {
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*corev1.Pod, error)
}

// Quarantine annotates pod ns/name through the API server (model.QuarantinePatch): on
// quarantines it on every node, off releases it (an automatic quarantine begun before now
// too). pods patches the pods of ns. It returns the resourceVersion of the write.
func Quarantine(ctx context.Context, pods PodPatcher, ns, name string, on bool, now time.Time) (string, error) {
	verb := "quarantine"
	if !on {
		verb = "release"
	}
	p, err := pods.Patch(ctx, name, types.MergePatchType, model.QuarantinePatch(on, now), metav1.PatchOptions{FieldManager: "rampart"})
	if err != nil {
		return "", fmt.Errorf("%s pod %s/%s: %w", verb, ns, name, err)
	}
	return p.ResourceVersion, nil
}
