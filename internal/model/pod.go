package model

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Pod is the part of a Kubernetes Pod that rampart reads: its identity, labels, owners and
// rampart's own annotations; its node, host networking, containers' names, images and ports;
// its phase, addresses and Ready condition. The field paths and JSON names are corev1.Pod's.
//
// Every node keeps every pod of the cluster, so their size is most of an agent's memory: a
// corev1.Pod is 1.2 KB before any field is set and each of its containers 0.4 KB, this type
// about a third of that. PodFrom converts at the edge (decoding, the informers' transform).
type Pod struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PodSpec   `json:"spec,omitempty"`
	Status            PodStatus `json:"status,omitempty"`
}

// PodSpec is the part of corev1.PodSpec rampart reads.
type PodSpec struct {
	NodeName       string      `json:"nodeName,omitempty"`
	HostNetwork    bool        `json:"hostNetwork,omitempty"`
	InitContainers []Container `json:"initContainers,omitempty"`
	Containers     []Container `json:"containers"`
}

// Container is the part of corev1.Container rampart reads: named ports for policy, images for
// scans.
type Container struct {
	Name  string                 `json:"name"`
	Image string                 `json:"image,omitempty"`
	Ports []corev1.ContainerPort `json:"ports,omitempty"`
}

// PodStatus is the part of corev1.PodStatus rampart reads; Conditions holds the Ready
// condition alone.
type PodStatus struct {
	Phase      corev1.PodPhase       `json:"phase,omitempty"`
	Conditions []corev1.PodCondition `json:"conditions,omitempty"`
	HostIP     string                `json:"hostIP,omitempty"`
	PodIP      string                `json:"podIP,omitempty"`
	PodIPs     []corev1.PodIP        `json:"podIPs,omitempty"`
}

// PodFrom keeps what rampart reads of p. Of the annotations only rampart's own stay: clusters
// put large values in the others (CNI network status, checksums). The result shares p's
// labels, owner references and ports.
func PodFrom(p *corev1.Pod) *Pod {
	out := &Pod{TypeMeta: p.TypeMeta, ObjectMeta: p.ObjectMeta}
	out.ManagedFields = nil
	out.Annotations = nil
	for k, v := range p.Annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	out.Spec.NodeName, out.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	out.Spec.Containers, out.Spec.InitContainers = containersFrom(p.Spec.Containers), containersFrom(p.Spec.InitContainers)
	out.Status.Phase, out.Status.HostIP, out.Status.PodIP, out.Status.PodIPs = p.Status.Phase, p.Status.HostIP, p.Status.PodIP, p.Status.PodIPs
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out
}

func containersFrom(cs []corev1.Container) []Container {
	if cs == nil {
		return nil
	}
	out := make([]Container, len(cs))
	for i, c := range cs {
		out[i] = Container{Name: c.Name, Image: c.Image, Ports: c.Ports}
	}
	return out
}

// Core returns the pod as a corev1.Pod, to write it to an API server.
func (p *Pod) Core() *corev1.Pod {
	c := p.DeepCopy()
	out := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: KindPod}, ObjectMeta: c.ObjectMeta}
	out.Spec.NodeName, out.Spec.HostNetwork = c.Spec.NodeName, c.Spec.HostNetwork
	core := func(cs []Container) []corev1.Container {
		if cs == nil {
			return nil
		}
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Image: c.Image, Ports: c.Ports}
		}
		return out
	}
	out.Spec.Containers, out.Spec.InitContainers = core(c.Spec.Containers), core(c.Spec.InitContainers)
	out.Status = corev1.PodStatus{Phase: c.Status.Phase, Conditions: c.Status.Conditions, HostIP: c.Status.HostIP, PodIP: c.Status.PodIP, PodIPs: c.Status.PodIPs}
	return out
}

// DeepCopy returns a copy sharing nothing with p.
func (p *Pod) DeepCopy() *Pod {
	if p == nil {
		return nil
	}
	out := &Pod{TypeMeta: p.TypeMeta, ObjectMeta: *p.ObjectMeta.DeepCopy(), Spec: p.Spec, Status: p.Status}
	cp := func(cs []Container) []Container {
		if cs == nil {
			return nil
		}
		out := make([]Container, len(cs))
		for i, c := range cs {
			out[i] = c
			if c.Ports != nil {
				out[i].Ports = append([]corev1.ContainerPort(nil), c.Ports...)
			}
		}
		return out
	}
	out.Spec.Containers, out.Spec.InitContainers = cp(p.Spec.Containers), cp(p.Spec.InitContainers)
	if p.Status.Conditions != nil {
		out.Status.Conditions = make([]corev1.PodCondition, len(p.Status.Conditions))
		for i := range p.Status.Conditions {
			p.Status.Conditions[i].DeepCopyInto(&out.Status.Conditions[i])
		}
	}
	if p.Status.PodIPs != nil {
		out.Status.PodIPs = append([]corev1.PodIP(nil), p.Status.PodIPs...)
	}
	return out
}

// DeepCopyObject makes Pod a runtime.Object, so informers can cache it.
func (p *Pod) DeepCopyObject() runtime.Object { return p.DeepCopy() }

var _ runtime.Object = (*Pod)(nil)
