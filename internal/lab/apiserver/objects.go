package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/rampart-sec/rampart/deploy"
)

// Create creates every object of the multi-document YAML docs (dry run: validated and
// admitted by the server, not stored), resolving kinds through discovery. Objects that exist
// are left as they are.
func Create(ctx context.Context, cfg *rest.Config, docs []byte, dryRun bool) error {
	objs, err := decode(docs)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	opts := metav1.CreateOptions{FieldManager: "rampart"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var errs []error
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err))
			continue
		}
		ri := dyn.Resource(m.Resource)
		var c dynamic.ResourceInterface = ri
		if ns := u.GetNamespace(); ns != "" {
			c = ri.Namespace(ns)
		}
		if _, err := c.Create(ctx, u, opts); err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

func decode(docs []byte) ([]*unstructured.Unstructured, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(docs), 4096)
	var out []*unstructured.Unstructured
	for {
		var u unstructured.Unstructured
		if err := d.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, &u)
		}
	}
}

// InstallCRDs creates the network-policy-api CRDs that deploy/ carries and waits until the
// server serves their resources.
func InstallCRDs(ctx context.Context, cfg *rest.Config) error {
	var all []byte
	for _, f := range deploy.CRDs {
		b, err := deploy.Files.ReadFile(f)
		if err != nil {
			return err
		}
		all = append(append(all, "\n---\n"...), b...)
	}
	if err := Create(ctx, cfg, all, false); err != nil {
		return fmt.Errorf("install CRDs: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	for {
		res, err := dc.ServerResourcesForGroupVersion("policy.networking.k8s.io/v1alpha1")
		if err == nil && len(res.APIResources) >= 2 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRDs not served: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
