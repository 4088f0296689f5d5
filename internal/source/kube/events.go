package kube

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/rampart-sec/rampart/internal/model"
)

// EventReasonNotEnforced is the reason of the Warning Event an agent posts on a policy object
// that says something rampart does not enforce as written.
const EventReasonNotEnforced = "PolicyNotEnforced"

// GapEvents returns a function that posts a Warning Event on the policy object of a gap (kubectl
// describe shows it beside the object), through client-go's event broadcaster (which
// aggregates repeats and rate-limits), and a function that stops it. component names the
// reporter ("rampart-agent"), host its node.
func GapEvents(s *Source, component, host string) (report func(model.Gap), stop func()) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.cs.CoreV1().Events("")})
	rec := b.NewRecorder(runtime.NewScheme(), corev1.EventSource{Component: component, Host: host})
	report = func(g model.Gap) {
		ref := &corev1.ObjectReference{APIVersion: model.APIVersion(g.Kind), Kind: g.Kind, Name: g.Name}
		if ref.APIVersion == "" || g.Name == "" {
			return // a kind, not an object: the agent's status and logs carry it
		}
		// Cluster-scoped objects' Events live in the default namespace, as kubectl expects.
		ref.Namespace = corev1.NamespaceDefault
		msg := g.Msg
		if g.Field != "" {
			msg = g.Field + ": " + msg
		}
		rec.Event(ref, corev1.EventTypeWarning, EventReasonNotEnforced, msg)
	}
	return report, b.Shutdown
}
