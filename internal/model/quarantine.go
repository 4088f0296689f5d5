package model

import (
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Quarantine annotations on a Pod. `rampart quarantine NS/POD` sets QuarantineAnnotation to
// "true": every node cuts all of the pod's traffic but what ThreatDefense spec.quarantine.allow
// lets through (DNS by default), until `rampart release NS/POD` removes it and stamps
// ReleasedAnnotation with the time, which also lifts an automatic quarantine (a detector's
// response) begun before then. Annotations, so that the state lives with the pod in the API
// server, every agent reads it from the informer it already has, and it goes with the pod.
const (
	QuarantineAnnotation = AnnotationPrefix + "quarantine"
	ReleasedAnnotation   = AnnotationPrefix + "released-at"
)

// IsQuarantined reports whether a pod carries rampart.io/quarantine: "true".
func IsQuarantined(p *Pod) bool { return p.Annotations[QuarantineAnnotation] == "true" }

// ReleasedAt is when the pod was last released (zero: never, or unreadable).
func ReleasedAt(p *Pod) time.Time {
	t, _ := time.Parse(time.RFC3339, p.Annotations[ReleasedAnnotation])
	return t
}

// validateQuarantine checks the pod's quarantine annotations.
func validateQuarantine(pod *corev1.Pod) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("metadata", "annotations")
	if v, ok := pod.Annotations[QuarantineAnnotation]; ok && v != "true" && v != "false" {
		errs = append(errs, field.NotSupported(p.Key(QuarantineAnnotation), v, []string{"true", "false"}))
	}
	if v, ok := pod.Annotations[ReleasedAnnotation]; ok {
		if _, err := time.Parse(time.RFC3339, v); err != nil {
			errs = append(errs, field.Invalid(p.Key(ReleasedAnnotation), v, "want an RFC 3339 time"))
		}
	}
	return errs
}

// QuarantinePort is traffic a quarantined pod may still send (and receive the replies of).
type QuarantinePort struct {
	Protocol corev1.Protocol `json:"protocol"` // TCP, UDP or SCTP
	Port     int32           `json:"port"`
}

// QuarantineSpec configures quarantine: what a quarantined pod may still do.
type QuarantineSpec struct {
	// Allow (default: DNS, UDP and TCP port 53) are the destination ports a quarantined pod may
	// still reach; [] allows nothing.
	Allow []QuarantinePort `json:"allow"`
}

// DefaultQuarantineAllow is what a quarantined pod may do when nothing is configured: resolve
// names.
var DefaultQuarantineAllow = []QuarantinePort{{Protocol: corev1.ProtocolUDP, Port: 53}, {Protocol: corev1.ProtocolTCP, Port: 53}}

// QuarantineAllow is what a ThreatDefense (nil: none) lets quarantined pods do.
func QuarantineAllow(td *ThreatDefense) []QuarantinePort {
	if td == nil || td.Spec.Quarantine == nil || td.Spec.Quarantine.Allow == nil {
		return DefaultQuarantineAllow
	}
	return td.Spec.Quarantine.Allow
}

func validateQuarantineSpec(q *QuarantineSpec, p *field.Path) field.ErrorList {
	if q == nil {
		return nil
	}
	var errs field.ErrorList
	for i, a := range q.Allow {
		pp := p.Child("allow").Index(i)
		switch a.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(pp.Child("protocol"), a.Protocol, []string{"TCP", "UDP", "SCTP"}))
		}
		if a.Port < 1 || a.Port > 65535 {
			errs = append(errs, field.Invalid(pp.Child("port"), a.Port, "must be between 1 and 65535"))
		}
	}
	return errs
}

// SetQuarantine quarantines a pod object (on) or releases it at now, as `rampart quarantine`
// and `rampart release` do.
func SetQuarantine(p *Pod, on bool, now time.Time) {
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	if on {
		p.Annotations[QuarantineAnnotation] = "true"
		return
	}
	delete(p.Annotations, QuarantineAnnotation)
	p.Annotations[ReleasedAnnotation] = now.UTC().Format(time.RFC3339)
}

// QuarantinePatch is SetQuarantine as a JSON merge patch of the pod, for the API server.
func QuarantinePatch(on bool, now time.Time) []byte {
	ann := map[string]any{QuarantineAnnotation: "true"}
	if !on {
		ann = map[string]any{QuarantineAnnotation: nil, ReleasedAnnotation: now.UTC().Format(time.RFC3339)}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	return b
}
