package model

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// Kind names of the supported objects.
const (
	KindNamespace     = "Namespace"
	KindNode          = "Node"
	KindPod           = "Pod"
	KindService       = "Service"
	KindEndpointSlice = "EndpointSlice"
	KindNetworkPolicy = "NetworkPolicy"
	KindANP           = "AdminNetworkPolicy"
	KindBANP          = "BaselineAdminNetworkPolicy"
	KindCNP           = "ClusterNetworkPolicy"
)

// kindInfo describes how to decode, default and validate one kind.
type kindInfo struct {
	// apiVersions are those accepted, the first preferred (it is what rampart writes).
	apiVersions []string
	namespaced  bool
	newObj      func() any
}

func (k kindInfo) accepts(apiVersion string) bool {
	for _, v := range k.apiVersions {
		if v == apiVersion {
			return true
		}
	}
	return false
}

// kinds are the kinds rampart models. ClusterNetworkPolicy's v1beta1 (network-policy-api
// v0.3.0) has exactly v1alpha2's schema, so both decode into the v1alpha2 type.
var kinds = map[string]kindInfo{
	KindNamespace:     {[]string{"v1"}, false, func() any { return &corev1.Namespace{} }},
	KindNode:          {[]string{"v1"}, false, func() any { return &corev1.Node{} }},
	KindPod:           {[]string{"v1"}, true, func() any { return &corev1.Pod{} }},
	KindService:       {[]string{"v1"}, true, func() any { return &corev1.Service{} }},
	KindEndpointSlice: {[]string{"discovery.k8s.io/v1"}, true, func() any { return &discoveryv1.EndpointSlice{} }},
	KindNetworkPolicy: {[]string{"networking.k8s.io/v1"}, true, func() any { return &networkingv1.NetworkPolicy{} }},
	KindANP:           {[]string{"policy.networking.k8s.io/v1alpha1"}, false, func() any { return &anpv1alpha1.AdminNetworkPolicy{} }},
	KindBANP:          {[]string{"policy.networking.k8s.io/v1alpha1"}, false, func() any { return &anpv1alpha1.BaselineAdminNetworkPolicy{} }},
	KindCNP:           {[]string{"policy.networking.k8s.io/v1alpha2", "policy.networking.k8s.io/v1beta1"}, false, func() any { return &cnpv1alpha2.ClusterNetworkPolicy{} }},
	KindThreatDefense: {[]string{ThreatDefenseAPIVersion}, false, func() any { return &ThreatDefense{} }},
}

// SupportedKinds lists the Kubernetes kinds rampart models, in a stable order (ThreatDefense,
// rampart's own configuration, is decoded too but is no API kind).
var SupportedKinds = []string{KindNamespace, KindNode, KindPod, KindService, KindEndpointSlice, KindNetworkPolicy, KindANP, KindBANP, KindCNP}

// APIVersion returns a supported kind's preferred apiVersion ("" for others).
func APIVersion(kind string) string {
	if v := kinds[kind].apiVersions; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Accepts reports whether rampart enforces kind at apiVersion.
func Accepts(kind, apiVersion string) bool { return kinds[kind].accepts(apiVersion) }

// Namespaced reports whether a supported kind lives in namespaces.
func Namespaced(kind string) bool { return kinds[kind].namespaced }

// IsKind reports whether kind is supported, accepting any capitalisation and common short names
// (pod, pods, netpol, anp, banp ...), and returns its canonical name.
func IsKind(kind string) (string, bool) {
	k := strings.ToLower(kind)
	for name := range kinds {
		n := strings.ToLower(name)
		if k == n || k == n+"s" || k == n+"es" {
			return name, true
		}
	}
	switch k {
	case "ns":
		return KindNamespace, true
	case "no":
		return KindNode, true
	case "po":
		return KindPod, true
	case "svc":
		return KindService, true
	case "netpol", "networkpolicies":
		return KindNetworkPolicy, true
	case "anp", "adminnetworkpolicies":
		return KindANP, true
	case "banp", "baselineadminnetworkpolicies":
		return KindBANP, true
	case "cnp", "clusternetworkpolicies":
		return KindCNP, true
	case "endpointslices":
		return KindEndpointSlice, true
	case "td", "threatdefenses":
		return KindThreatDefense, true
	}
	return "", false
}

// Object is one decoded, defaulted and validated API object.
type Object struct {
	File string
	Doc  int
	Kind string
	// Obj is a pointer to the API type: *corev1.Pod, *networkingv1.NetworkPolicy, ...
	Obj any
}

// Meta returns the object's metadata.
func (o Object) Meta() *metav1.ObjectMeta { return metaOf(o.Obj) }

// Ref returns "namespace/name" for namespaced objects and "name" otherwise.
func (o Object) Ref() string {
	m := o.Meta()
	if m.Namespace != "" {
		return m.Namespace + "/" + m.Name
	}
	return m.Name
}

func metaOf(obj any) *metav1.ObjectMeta {
	if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
		return a.GetObjectMeta().(*metav1.ObjectMeta)
	}
	panic(fmt.Sprintf("model: %T has no ObjectMeta", obj))
}

// DecodeOptions control decoding.
type DecodeOptions struct {
	// AllowUnknownFields turns off strict decoding (unknown and duplicate fields are errors by default).
	AllowUnknownFields bool
	// Warn, when set, receives a message for each well-formed object of a kind rampart does not
	// model and that is no policy (a Deployment, a ConfigMap ...), which is then skipped.
	// Without it such objects are errors.
	Warn func(msg string)
	// SkipUnsupported turns what rampart would not enforce as written from errors into
	// warnings (through Warn): objects of a policy kind or API version it does not know are
	// skipped, and fields it does not enforce are compiled fail-closed (Unsupported says how).
	// Never silent: without Warn, nothing is skipped.
	SkipUnsupported bool
}

// Decode reads a stream of YAML documents (or one JSON document, or a List) and returns the
// objects in it, defaulted and validated. file names the stream in errors. It returns every
// problem found, never a partial result together with an error.
func Decode(r io.Reader, file string, opts DecodeOptions) ([]Object, error) {
	var objs []Object
	var errs Errors
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for doc := 1; ; doc++ {
		raw, err := yr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &Error{File: file, Doc: doc, Msg: "read: " + err.Error()})
			break
		}
		o, es := decodeDocument(raw, file, doc, opts)
		objs = append(objs, o...)
		errs = append(errs, es...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return objs, nil
}

func decodeDocument(raw []byte, file string, doc int, opts DecodeOptions) ([]Object, Errors) {
	if len(bytes.TrimSpace(stripComments(raw))) == 0 {
		return nil, nil
	}
	js, err := YAMLToJSON(raw)
	if err != nil {
		return nil, Errors{{File: file, Doc: doc, Msg: "malformed YAML: " + err.Error()}}
	}
	if string(bytes.TrimSpace(js)) == "null" {
		return nil, nil
	}
	return decodeJSON(js, file, doc, opts)
}

// stripComments drops full-line YAML comments so a document of only comments counts as empty.
func stripComments(raw []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(raw, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func decodeJSON(js []byte, file string, doc int, opts DecodeOptions) ([]Object, Errors) {
	var tm struct {
		metav1.TypeMeta
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Items []rawJSON `json:"items"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return nil, Errors{{File: file, Doc: doc, Msg: "not a Kubernetes object: " + err.Error()}}
	}
	if tm.Kind == "" {
		return nil, Errors{{File: file, Doc: doc, Field: "kind", Msg: "required field is missing"}}
	}
	if strings.HasSuffix(tm.Kind, "List") {
		var objs []Object
		var errs Errors
		for i, item := range tm.Items {
			o, es := decodeJSON(item, file, doc, opts)
			for _, e := range es {
				e.Field = strings.TrimPrefix(fmt.Sprintf("items[%d].%s", i, e.Field), ".")
			}
			objs = append(objs, o...)
			errs = append(errs, es...)
		}
		return objs, errs
	}
	ref := tm.Metadata.Name
	if tm.Metadata.Namespace != "" {
		ref = tm.Metadata.Namespace + "/" + ref
	}
	fail := func(field, msg string) Errors {
		return Errors{{File: file, Doc: doc, Kind: tm.Kind, Ref: ref, Field: field, Msg: msg}}
	}
	info, ok := kinds[tm.Kind]
	if !ok || !info.accepts(tm.APIVersion) {
		if policy := IsPolicyKind(tm.APIVersion, tm.Kind); policy || !ok {
			what := "rampart does not model this kind"
			if policy {
				what = "rampart does not enforce this policy kind or API version"
			}
			if opts.Warn != nil && tm.APIVersion != "" && tm.Metadata.Name != "" && (!policy || opts.SkipUnsupported) {
				opts.Warn(fmt.Sprintf("%s (document %d): skipping %s %s %s: %s", file, doc, tm.APIVersion, tm.Kind, ref, what))
				return nil, nil
			}
			if policy {
				field, msg := "kind", fmt.Sprintf("%s %s is a policy rampart does not enforce: nothing it says would be enforced", tm.APIVersion, tm.Kind)
				if ok {
					field, msg = "apiVersion", fmt.Sprintf("%s %s is not enforced by rampart (it enforces %s %s)", tm.APIVersion, tm.Kind, strings.Join(info.apiVersions, " and "), tm.Kind)
				}
				return nil, fail(field, msg+"; pass --skip-unsupported to skip it")
			}
			return nil, fail("kind", fmt.Sprintf("unsupported kind %q (supported: %s)", tm.Kind, strings.Join(SupportedKinds, ", ")))
		}
		return nil, fail("apiVersion", fmt.Sprintf("%s must have apiVersion %q, not %q", tm.Kind, strings.Join(info.apiVersions, `" or "`), tm.APIVersion))
	}
	if tm.Kind == KindANP || tm.Kind == KindBANP {
		var err error
		if js, err = convertLegacyANP(js); err != nil {
			return nil, fail("spec", err.Error())
		}
	}
	obj := info.newObj()
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, fail("", "decode: "+cleanJSONError(err))
	}
	m := metaOf(obj)
	if info.namespaced && m.Namespace == "" {
		m.Namespace = "default" // as kubectl does for namespaced objects without a namespace
	}
	o := Object{File: file, Doc: doc, Kind: tm.Kind, Obj: obj}
	var errs Errors
	add := func(field, msg string) {
		errs = append(errs, &Error{File: file, Doc: doc, Kind: tm.Kind, Ref: o.Ref(), Field: field, Msg: msg})
	}
	if !opts.AllowUnknownFields {
		for _, se := range strict {
			add("", se.Error())
		}
	}
	if !info.namespaced && m.Namespace != "" {
		add("metadata.namespace", fmt.Sprintf("%s is cluster-scoped and takes no namespace", tm.Kind))
	}
	setDefaults(o)
	for _, fe := range validate(o) {
		add(fe.Field, fe.ErrorBody())
	}
	for _, g := range Unsupported(o.Obj) {
		if opts.SkipUnsupported && opts.Warn != nil {
			opts.Warn(fmt.Sprintf("%s (document %d): %s", file, doc, g))
			continue
		}
		add(g.Field, g.Msg+"; pass --skip-unsupported to accept it")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return []Object{o}, nil
}

// rawJSON keeps List items undecoded until their kind is known.
type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// cleanJSONError trims Go type names from decoder errors, which mean nothing to users.
func cleanJSONError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "json: ")
	if i := strings.Index(s, " of type "); i >= 0 && strings.Contains(s, "cannot unmarshal") {
		s = s[:i]
	}
	return s
}
