package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/rampart-sec/rampart/internal/model"
)

// api is what a Source needs of an API server: a list-watch of each kind it mirrors, discovery,
// the server's health, and a sink for Events.
//
// The agent builds it on REST clients whose scheme holds those kinds alone (restAPI), not on
// client-go's generated clientsets: those register every API group of Kubernetes (their
// discovery client too), and their code and tables were a quarter of the agent's resident
// memory. Tests build it on fake clientsets.
type api struct {
	// listWatch lists and watches one kind (model.Kind*) in every namespace.
	listWatch func(kind string) cache.ListerWatcher
	// resources lists the resources of one group version; an error when it is not served.
	resources func(ctx context.Context, gv schema.GroupVersion) (*metav1.APIResourceList, error)
	// allResources lists every served group version's resources.
	allResources func(ctx context.Context) ([]*metav1.APIResourceList, error)
	// get reads a path of the server (/healthz, /version); nil where there is no server.
	get    func(ctx context.Context, path string) ([]byte, error)
	events record.EventSink
}

// kindResource is where each mirrored kind is served.
var kindResource = map[string]struct {
	gv       schema.GroupVersion
	resource string
	obj      runtime.Object // the informer's object type
}{
	model.KindNamespace:     {corev1.SchemeGroupVersion, "namespaces", &corev1.Namespace{}},
	model.KindNode:          {corev1.SchemeGroupVersion, "nodes", &corev1.Node{}},
	model.KindPod:           {corev1.SchemeGroupVersion, "pods", &corev1.Pod{}},
	model.KindService:       {corev1.SchemeGroupVersion, "services", &corev1.Service{}},
	model.KindEndpointSlice: {discoveryv1.SchemeGroupVersion, "endpointslices", &discoveryv1.EndpointSlice{}},
	model.KindNetworkPolicy: {networkingv1.SchemeGroupVersion, "networkpolicies", &networkingv1.NetworkPolicy{}},
	model.KindANP:           {schema.GroupVersion(anpv1alpha1.GroupVersion), "adminnetworkpolicies", &anpv1alpha1.AdminNetworkPolicy{}},
	model.KindBANP:          {schema.GroupVersion(anpv1alpha1.GroupVersion), "baselineadminnetworkpolicies", &anpv1alpha1.BaselineAdminNetworkPolicy{}},
	model.KindCNP:           {schema.GroupVersion(cnpv1alpha2.GroupVersion), "clusternetworkpolicies", &cnpv1alpha2.ClusterNetworkPolicy{}},
}

// restAPI is the api of the server cfg reaches.
func restAPI(cfg *rest.Config) (api, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme, anpv1alpha1.Install, cnpv1alpha2.Install} {
		if err := add(scheme); err != nil {
			return api{}, err
		}
	}
	codecs := serializer.NewCodecFactory(scheme).WithoutConversion()
	clients := map[schema.GroupVersion]*rest.RESTClient{}
	client := func(gv schema.GroupVersion) (*rest.RESTClient, error) {
		if c, ok := clients[gv]; ok {
			return c, nil
		}
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.NegotiatedSerializer = &gv, codecs
		c.APIPath = "/apis"
		if gv.Group == "" {
			c.APIPath = "/api"
		}
		if gv.Group != anpv1alpha1.GroupName {
			// Built-in kinds in protobuf, as client-go's clientsets ask for them; the CRDs'
			// are served as JSON only.
			c.ContentType = runtime.ContentTypeProtobuf
			c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		}
		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		rc, err := rest.RESTClientFor(c)
		if err != nil {
			return nil, err
		}
		clients[gv] = rc
		return rc, nil
	}
	lws := map[string]cache.ListerWatcher{}
	for kind, r := range kindResource {
		rc, err := client(r.gv)
		if err != nil {
			return api{}, err
		}
		lws[kind] = cache.NewListWatchFromClient(rc, r.resource, metav1.NamespaceAll, fields.Everything())
	}
	// Discovery and raw paths: a client of no group version, speaking JSON.
	dc := rest.CopyConfig(cfg)
	dc.GroupVersion, dc.APIPath, dc.NegotiatedSerializer = &schema.GroupVersion{}, "", codecs
	if dc.UserAgent == "" {
		dc.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	disc, err := rest.UnversionedRESTClientFor(dc)
	if err != nil {
		return api{}, err
	}
	core, _ := client(corev1.SchemeGroupVersion)
	get := func(ctx context.Context, path string) ([]byte, error) { return disc.Get().AbsPath(path).Do(ctx).Raw() }
	return api{
		listWatch: func(kind string) cache.ListerWatcher { return lws[kind] },
		resources: func(ctx context.Context, gv schema.GroupVersion) (*metav1.APIResourceList, error) {
			path := "/apis/" + gv.Group + "/" + gv.Version
			if gv.Group == "" {
				path = "/api/" + gv.Version
			}
			b, err := get(ctx, path)
			if err != nil {
				return nil, err
			}
			var l metav1.APIResourceList
			if err := json.Unmarshal(b, &l); err != nil {
				return nil, fmt.Errorf("discovery %s: %w", path, err)
			}
			return &l, nil
		},
		allResources: func(ctx context.Context) ([]*metav1.APIResourceList, error) { return discoverAll(ctx, disc) },
		get:          get,
		events:       eventSink{core},
	}, nil
}

// aggregatedDiscovery asks for every group's resources in one answer (API servers since 1.26,
// GA in 1.30); older servers answer with the plain group list, and each group version is then
// asked on its own.
const aggregatedDiscovery = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

// discoverAll lists every served group version's resources, legacy core group included.
func discoverAll(ctx context.Context, rc *rest.RESTClient) ([]*metav1.APIResourceList, error) {
	var out []*metav1.APIResourceList
	for _, root := range []string{"/api", "/apis"} {
		res := rc.Get().AbsPath(root).SetHeader("Accept", aggregatedDiscovery+",application/json").Do(ctx)
		b, err := res.Raw()
		if err != nil {
			return nil, fmt.Errorf("discovery %s: %w", root, err)
		}
		var ct string
		res.ContentType(&ct)
		if mt, params, _ := mime.ParseMediaType(ct); mt == "application/json" && params["as"] == "APIGroupDiscoveryList" {
			var l apidiscoveryv2.APIGroupDiscoveryList
			if err := json.Unmarshal(b, &l); err != nil {
				return nil, fmt.Errorf("discovery %s: %w", root, err)
			}
			for _, g := range l.Items {
				for _, v := range g.Versions {
					rl := &metav1.APIResourceList{GroupVersion: schema.GroupVersion{Group: g.Name, Version: v.Version}.String()}
					for _, r := range v.Resources {
						ar := metav1.APIResource{Name: r.Resource, Namespaced: r.Scope == apidiscoveryv2.ScopeNamespace, Verbs: r.Verbs}
						if r.ResponseKind != nil {
							ar.Kind = r.ResponseKind.Kind
						}
						rl.APIResources = append(rl.APIResources, ar)
					}
					out = append(out, rl)
				}
			}
			continue
		}
		// The plain answers: /api lists versions of the core group, /apis the groups.
		var gvs []string
		if root == "/api" {
			var v metav1.APIVersions
			if err := json.Unmarshal(b, &v); err != nil {
				return nil, fmt.Errorf("discovery %s: %w", root, err)
			}
			gvs = v.Versions
		} else {
			var gl metav1.APIGroupList
			if err := json.Unmarshal(b, &gl); err != nil {
				return nil, fmt.Errorf("discovery %s: %w", root, err)
			}
			for _, g := range gl.Groups {
				for _, v := range g.Versions {
					gvs = append(gvs, v.GroupVersion)
				}
			}
		}
		for _, gv := range gvs {
			b, err := rc.Get().AbsPath(root, gv).Do(ctx).Raw()
			if err != nil {
				continue // a group version that went away, or an aggregated server that is down
			}
			var l metav1.APIResourceList
			if err := json.Unmarshal(b, &l); err != nil {
				continue
			}
			if l.GroupVersion == "" {
				l.GroupVersion = gv
			}
			out = append(out, &l)
		}
	}
	return out, nil
}

// eventSink posts Events through the core group's REST client, as client-go's typed
// EventSinkImpl does.
type eventSink struct{ rc *rest.RESTClient }

func (s eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Post().Namespace(e.Namespace).Resource("events").Body(e).Do(context.Background()).Into(out)
	return out, err
}

func (s eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Put().Namespace(e.Namespace).Resource("events").Name(e.Name).Body(e).Do(context.Background()).Into(out)
	return out, err
}

func (s eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Patch(types.StrategicMergePatchType).Namespace(e.Namespace).Resource("events").Name(e.Name).Body(data).Do(context.Background()).Into(out)
	return out, err
}
