package model

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodCoreAndCopy(t *testing.T) {
	core := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"},
			Annotations:     map[string]string{"other": "x", QuarantineAnnotation: "true"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-1"}}},
		Spec: corev1.PodSpec{NodeName: "n1", HostNetwork: true, ServiceAccountName: "dropped",
			Containers: []corev1.Container{{Name: "c", Image: "web:1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "192.0.2.1", PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	p := PodFrom(core)
	// Core keeps what PodFrom kept, as a Pod an API server accepts; PodFrom of it is the same.
	back := p.Core()
	if back.Kind != "Pod" || back.APIVersion != "v1" || back.Spec.ServiceAccountName != "" || back.Annotations["other"] != "" {
		t.Fatalf("Core: %+v", back)
	}
	if again := PodFrom(back); !equality.Semantic.DeepEqual(again.Spec, p.Spec) || !equality.Semantic.DeepEqual(again.Status, p.Status) || !equality.Semantic.DeepEqual(again.ObjectMeta, p.ObjectMeta) {
		t.Fatalf("PodFrom(Core()) differs:\n got %+v\nwant %+v", again, p)
	}
	// The JSON is a Pod's: it decodes strictly as one.
	b, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(strings.NewReader(string(b)), "pod.json", DecodeOptions{})
	if err != nil || len(objs) != 1 {
		t.Fatalf("decode %s: %v", b, err)
	}
	// DeepCopy shares nothing: changing the copy leaves the original.
	c := p.DeepCopy()
	c.Labels["app"] = "x"
	c.Annotations[QuarantineAnnotation] = "false"
	c.Spec.Containers[0].Ports[0].ContainerPort = 81
	c.Status.PodIPs[0].IP = "10.0.0.2"
	c.Status.Conditions[0].Status = corev1.ConditionFalse
	c.OwnerReferences[0].Name = "y"
	if p.Labels["app"] != "web" || !IsQuarantined(p) || p.Spec.Containers[0].Ports[0].ContainerPort != 80 ||
		p.Status.PodIPs[0].IP != "10.0.0.1" || p.Status.Conditions[0].Status != corev1.ConditionTrue || p.OwnerReferences[0].Name != "web-1" {
		t.Fatalf("DeepCopy shares with the original: %+v", p)
	}
}
