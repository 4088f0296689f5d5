package kube

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	npclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"github.com/rampart-sec/rampart/internal/model"
)

// clientsetAPI is the api of client-go clientsets, fake ones in unit tests: the agent's own
// (restAPI) is tested against a real API server.
func clientsetAPI(cs kubernetes.Interface, np npclient.Interface) api {
	type lister func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error)
	type watcher func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)
	// Fake clientsets say they do not stream lists (WatchList); the wrapper passes that on.
	lw := func(l lister, w watcher) cache.ListerWatcher {
		return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{ListWithContextFunc: cache.ListWithContextFunc(l), WatchFuncWithContext: cache.WatchFuncWithContext(w)}, cs)
	}
	lws := map[string]cache.ListerWatcher{
		model.KindNamespace: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Namespaces().List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Namespaces().Watch(ctx, o)
			}),
		model.KindNode: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Nodes().List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Nodes().Watch(ctx, o)
			}),
		model.KindPod: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Pods("").List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Pods("").Watch(ctx, o)
			}),
		model.KindService: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Services("").List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Services("").Watch(ctx, o)
			}),
		model.KindEndpointSlice: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.DiscoveryV1().EndpointSlices("").List(ctx, o)
		}, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.DiscoveryV1().EndpointSlices("").Watch(ctx, o)
		}),
		model.KindNetworkPolicy: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.NetworkingV1().NetworkPolicies("").List(ctx, o)
		}, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.NetworkingV1().NetworkPolicies("").Watch(ctx, o)
		}),
		model.KindANP: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return np.PolicyV1alpha1().AdminNetworkPolicies().List(ctx, o)
		}, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return np.PolicyV1alpha1().AdminNetworkPolicies().Watch(ctx, o)
		}),
		model.KindBANP: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return np.PolicyV1alpha1().BaselineAdminNetworkPolicies().List(ctx, o)
		}, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return np.PolicyV1alpha1().BaselineAdminNetworkPolicies().Watch(ctx, o)
		}),
		model.KindCNP: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return np.PolicyV1alpha2().ClusterNetworkPolicies().List(ctx, o)
		}, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return np.PolicyV1alpha2().ClusterNetworkPolicies().Watch(ctx, o)
		}),
	}
	return api{
		listWatch: func(kind string) cache.ListerWatcher { return lws[kind] },
		resources: func(_ context.Context, gv schema.GroupVersion) (*metav1.APIResourceList, error) {
			return cs.Discovery().ServerResourcesForGroupVersion(gv.String())
		},
		allResources: func(context.Context) ([]*metav1.APIResourceList, error) {
			_, l, err := cs.Discovery().ServerGroupsAndResources()
			return l, err
		},
		events: &typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")},
	}
}
