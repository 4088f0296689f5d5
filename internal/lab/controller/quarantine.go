package controller

import (
	"context"
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rampart-sec/rampart/internal/model"
)

// QuarantineRequest quarantines (On) or releases a lab pod.
type QuarantineRequest struct {
	Pod string `json:"pod"` // NS/NAME
	On  bool   `json:"on"`
}

// Quarantine annotates a lab pod as `rampart quarantine` and `rampart release` annotate a real
// one (model.QuarantineAnnotation), through the API server in a --kube lab, and returns once
// every node enforces it.
func (l *Lab) Quarantine(ctx context.Context, req QuarantineRequest) error {
	ns, name, err := splitKey(req.Pod)
	if err != nil || ns == "" {
		return fmt.Errorf("pod %q: give NS/NAME", req.Pod)
	}
	now := time.Now()
	if l.kube != nil {
		u, err := l.kube.resource(model.KindPod, ns).Patch(ctx, name, types.MergePatchType, model.QuarantinePatch(req.On, now), metav1.PatchOptions{FieldManager: "rampart-lab"})
		if err != nil {
			return fmt.Errorf("pod %s: %w", req.Pod, err)
		}
		rv, _ := strconv.ParseUint(u.GetResourceVersion(), 10, 64)
		return l.enforced(ctx, rv, nil)
	}
	return l.Change(ctx, func(c *model.Cluster) error {
		p, ok := c.Pods[req.Pod]
		if !ok {
			return fmt.Errorf("no pod %s", req.Pod)
		}
		model.SetQuarantine(p, req.On, now)
		return nil
	})
}
