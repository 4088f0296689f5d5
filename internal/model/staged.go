package model

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// StagedAnnotation marks a policy as staged (audit mode): it is not enforced, and flow records
// say what it would decide (Calico's staged policies, Cilium's audit mode).
const StagedAnnotation = AnnotationPrefix + "staged"

// AnnotationPrefix starts every annotation rampart reads.
const AnnotationPrefix = "rampart.io/"

// IsStaged reports whether a policy object carries rampart.io/staged: "true".
func IsStaged(o metav1.Object) bool { return o.GetAnnotations()[StagedAnnotation] == "true" }

// validateStaged rejects values of the annotation other than "true" and "false" (a policy its
// author meant only to try would otherwise be enforced), and the annotation on other kinds.
func validateStaged(o Object) field.ErrorList {
	v, ok := o.Meta().Annotations[StagedAnnotation]
	if !ok {
		return nil
	}
	p := field.NewPath("metadata", "annotations").Key(StagedAnnotation)
	switch o.Kind {
	case KindNetworkPolicy, KindANP, KindBANP, KindCNP:
		if v == "true" || v == "false" {
			return nil
		}
		return field.ErrorList{field.NotSupported(p, v, []string{"true", "false"})}
	}
	return field.ErrorList{field.Invalid(p, v, "only NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy objects can be staged")}
}

// HasStaged reports whether any policy of the cluster is staged.
func (c *Cluster) HasStaged() bool {
	for _, p := range c.NetworkPolicies {
		if IsStaged(p) {
			return true
		}
	}
	for _, p := range c.ANPs {
		if IsStaged(p) {
			return true
		}
	}
	for _, p := range c.BANPs {
		if IsStaged(p) {
			return true
		}
	}
	for _, p := range c.CNPs {
		if IsStaged(p) {
			return true
		}
	}
	return false
}
