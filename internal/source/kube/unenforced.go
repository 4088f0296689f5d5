package kube

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rampart-sec/rampart/internal/model"
)

// servedKind is a policy kind the API server serves that rampart does not enforce.
type servedKind struct {
	gvr        schema.GroupVersionResource
	kind       string
	namespaced bool
}

func (k servedKind) String() string { return k.gvr.GroupVersion().String() + " " + k.kind }

// servedUnenforced lists, from discovery, the policy kinds the API server serves that rampart
// does not enforce. Discovery needs no RBAC beyond what every client has.
func (s *Source) servedUnenforced(ctx context.Context) ([]servedKind, error) {
	lists, err := s.api.allResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var out []servedKind
	seen := map[string]bool{}
	for _, l := range lists {
		gv, perr := schema.ParseGroupVersion(l.GroupVersion)
		if perr != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !model.IsPolicyKind(l.GroupVersion, r.Kind) || model.Accepts(r.Kind, l.GroupVersion) {
				continue // subresources, what is no policy, and what rampart enforces
			}
			k := servedKind{gvr: gv.WithResource(r.Name), kind: r.Kind, namespaced: r.Namespaced}
			if !seen[k.String()] {
				seen[k.String()] = true
				out = append(out, k)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// UnenforcedKinds lists the policy kinds the API server serves that rampart does not enforce
// ("cilium.io/v2 CiliumNetworkPolicy"): objects of those kinds would otherwise be silently
// ignored.
func UnenforcedKinds(ctx context.Context, s *Source) ([]string, error) {
	kinds, err := s.servedUnenforced(ctx)
	out := make([]string, 0, len(kinds))
	for _, k := range kinds {
		out = append(out, k.String())
	}
	return out, err
}

const unenforcedKindMsg = "rampart does not enforce this policy kind: the object is not taken into account (write it as a NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy or ClusterNetworkPolicy)"

// findUnenforced lists the objects of every served policy kind rampart does not enforce: one
// gap per object, or one per kind whose objects the agent may not list (then any object of it
// is unenforced, and the gap says so).
func (s *Source) findUnenforced(ctx context.Context) ([]model.Gap, error) {
	kinds, err := s.servedUnenforced(ctx)
	if err != nil {
		return nil, err
	}
	var gaps []model.Gap
	for _, k := range kinds {
		apiVersion := k.gvr.GroupVersion().String()
		if s.md == nil {
			gaps = append(gaps, model.Gap{APIVersion: apiVersion, Kind: k.kind, Msg: "the cluster serves this policy kind, which rampart does not enforce: its objects are not taken into account"})
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		list, err := s.md.Resource(k.gvr).List(lctx, metav1.ListOptions{})
		cancel()
		if err != nil {
			gaps = append(gaps, model.Gap{APIVersion: apiVersion, Kind: k.kind,
				Msg: fmt.Sprintf("the cluster serves this policy kind, which rampart does not enforce, and its objects cannot be listed (%v): none of them is taken into account", err)})
			continue
		}
		for _, o := range list.Items {
			gaps = append(gaps, model.Gap{APIVersion: apiVersion, Kind: k.kind, Namespace: o.Namespace, Name: o.Name, Msg: unenforcedKindMsg})
		}
	}
	return gaps, nil
}

// watchUnenforced looks for objects of policy kinds rampart does not enforce at the first sync
// and every UnenforcedPoll after (new CRDs, new objects), and notifies when the list changes,
// so that the agent reports them (status, logs, metric, Events) instead of enforcing a looser
// policy than written without a word.
func (s *Source) watchUnenforced(ctx context.Context) {
	t := time.NewTicker(s.opts.UnenforcedPoll)
	defer t.Stop()
	for {
		gaps, err := s.findUnenforced(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.opts.Logger.Warn("look for policy kinds rampart does not enforce", "err", err)
		} else {
			s.mu.Lock()
			changed := !slices.Equal(s.unenforced, gaps)
			s.unenforced = gaps
			s.mu.Unlock()
			if changed {
				s.rev.Add(1)
				s.Notify()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Gaps are the policy objects (or kinds) the cluster holds that rampart does not enforce, as
// last found.
func (s *Source) Gaps() []model.Gap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.unenforced)
}
