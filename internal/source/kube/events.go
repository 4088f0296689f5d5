package kube

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"

	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/threat"
)

// EventReasonNotEnforced is the reason of the Warning Event an agent posts on a policy object
// that says something rampart does not enforce as written.
const EventReasonNotEnforced = "PolicyNotEnforced"

// Events posts an agent's Kubernetes Events through client-go's event broadcaster (which
// aggregates repeats and rate-limits), so that kubectl describe shows them beside the object.
type Events struct {
	b   record.EventBroadcaster
	rec record.EventRecorder
}

// NewEvents starts posting Events for the source's cluster; component names the reporter
// ("rampart-agent"), host its node. Stop ends it.
func NewEvents(s *Source, component, host string) *Events {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(s.api.events)
	return &Events{b: b, rec: b.NewRecorder(runtime.NewScheme(), corev1.EventSource{Component: component, Host: host})}
}

// Stop stops posting.
func (e *Events) Stop() { e.b.Shutdown() }

// Gap posts a Warning Event (EventReasonNotEnforced) on the policy object of a gap.
func (e *Events) Gap(g model.Gap) {
	ref := &corev1.ObjectReference{APIVersion: g.APIVersion, Kind: g.Kind, Namespace: g.Namespace, Name: g.Name}
	if ref.APIVersion == "" {
		ref.APIVersion = model.APIVersion(g.Kind)
	}
	if ref.APIVersion == "" || g.Name == "" {
		return // a kind, not an object: the agent's status and logs carry it
	}
	if ref.Namespace == "" { // cluster-scoped objects' Events live in the default namespace, as kubectl expects
		ref.Namespace = corev1.NamespaceDefault
	}
	msg := g.Msg
	if g.Field != "" {
		msg = g.Field + ": " + msg
	}
	e.rec.Event(ref, corev1.EventTypeWarning, EventReasonNotEnforced, msg)
}

// alertReasons are the Events' reasons by alert type.
var alertReasons = map[string]string{
	threat.TypePortScan: "PortScan", threat.TypeSynFlood: "SynFlood", threat.TypeThreatFeed: "ThreatFeed", threat.TypeHoneypot: "Honeypot",
	threat.TypeShield: "Shield",
}

// Alert posts a Warning Event on the pod a threat-defense alert affects: its target, or its
// source when the target is no pod (a horizontal scan, traffic to a listed address). An alert
// that names no pod has no object to be posted on.
func (e *Events) Alert(a threat.Alert) {
	p := a.Target
	if p.Pod == "" {
		p = a.Source
	}
	if p.Pod == "" {
		return
	}
	reason := alertReasons[a.Type]
	if reason == "" {
		reason = "ThreatDetected"
	}
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: model.KindPod, Namespace: p.Namespace, Name: p.Pod}
	e.rec.Eventf(ref, corev1.EventTypeWarning, reason, "%s (response: %s)", a.Message, a.Response)
}
