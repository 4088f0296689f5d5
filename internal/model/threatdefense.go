package model

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// KindThreatDefense is rampart's own configuration of threat defense (layer three). It is not a
// Kubernetes API kind rampart watches: the agent reads it from a file (a mounted ConfigMap) and
// the lab keeps it with its objects.
const KindThreatDefense = "ThreatDefense"

// ThreatDefenseAPIVersion is its apiVersion.
const ThreatDefenseAPIVersion = "rampart.io/v1alpha1"

// ThreatDefense configures the detectors, threat feeds, honeypots and shields of every node.
type ThreatDefense struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ThreatDefenseSpec `json:"spec"`
}

// ThreatDefenseSpec is what to detect and how to answer.
type ThreatDefenseSpec struct {
	Detectors Detectors  `json:"detectors"`
	Feeds     []Feed     `json:"feeds,omitempty"`
	Honeypots []Honeypot `json:"honeypots,omitempty"`
	Shields   []Shield   `json:"shields,omitempty"`
	// Allowlist names sources that never raise a detector's alert or response (known scanners,
	// the monitoring namespace). Feeds still apply to them.
	Allowlist []Source `json:"allowlist,omitempty"`
	// Overrides change detectors for targets in some namespaces; the first matching wins.
	Overrides []Override `json:"overrides,omitempty"`
	// Quarantine says what quarantined pods may still do (default: DNS).
	Quarantine *QuarantineSpec `json:"quarantine,omitempty"`
}

// Detectors configures the on-node detectors; a nil detector is off.
type Detectors struct {
	PortScan *PortScanDetector `json:"portScan,omitempty"`
	SynFlood *SynFloodDetector `json:"synFlood,omitempty"`
}

// Detector actions.
const (
	ActionAlert      = "alert"
	ActionBlock      = "block"
	ActionQuarantine = "quarantine"
	ActionRateLimit  = "rateLimit"
)

// PortScanDetector counts, per source, the distinct ports it first contacts on one target
// (vertical) and the distinct addresses it first contacts on one port (horizontal) within a
// window, as Zeek's scan detection does.
type PortScanDetector struct {
	Action string `json:"action"`
	// Ports is the vertical threshold (default 15), Hosts the horizontal one (default 25).
	Ports int `json:"ports,omitempty"`
	Hosts int `json:"hosts,omitempty"`
	// Window (default 5m) is how long a first contact counts.
	Window *metav1.Duration `json:"window,omitempty"`
	// BlockFor (default 10m) is how long a block or quarantine it triggers lasts.
	BlockFor *metav1.Duration `json:"blockFor,omitempty"`
}

// SynFloodDetector compares each target pod's rate of new TCP connection attempts with the rate
// it learned for that pod.
type SynFloodDetector struct {
	Action string `json:"action"`
	// MinRate (default 500 per second) is the rate below which nothing is a flood, whatever the
	// baseline; Sensitivity (default 10) how many times its learned rate a pod must receive.
	MinRate     int     `json:"minRate,omitempty"`
	Sensitivity float64 `json:"sensitivity,omitempty"`
	// PerSource (default 50 per second) and Burst (default 100) are the token bucket each source
	// gets toward a flooded pod under rateLimit.
	PerSource int              `json:"perSource,omitempty"`
	Burst     int              `json:"burst,omitempty"`
	BlockFor  *metav1.Duration `json:"blockFor,omitempty"`
}

// Feed is a list of addresses known to be hostile.
type Feed struct {
	Name string `json:"name"`
	// File or URL (exactly one) holds the list; Refresh (default 1h) is how often it is read again.
	File    string           `json:"file,omitempty"`
	URL     string           `json:"url,omitempty"`
	Format  string           `json:"format,omitempty"` // netset (default) | spamhaus
	Action  string           `json:"action,omitempty"` // block (default) | alert
	Refresh *metav1.Duration `json:"refresh,omitempty"`
}

// Feed formats.
const (
	FormatNetset   = "netset"
	FormatSpamhaus = "spamhaus"
)

// Honeypot is a decoy: any connection attempt to it raises an alert naming the source.
type Honeypot struct {
	Namespace         string                `json:"namespace,omitempty"`
	Pod               string                `json:"pod,omitempty"`
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Ports limits the decoy to some ports (default: all).
	Ports  []int32 `json:"ports,omitempty"`
	Action string  `json:"action,omitempty"` // alert (default) | block | quarantine
}

// Shield is a network-level mitigation of a known vulnerability for the selected pods.
type Shield struct {
	Name              string                `json:"name"`
	Selector          *metav1.LabelSelector `json:"selector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// ConnectionLimit sets the connection-limit shield's limits (defaults when absent).
	ConnectionLimit *ConnectionLimit `json:"connectionLimit,omitempty"`
}

// ConnectionLimit bounds what one source may do to one selected pod over TCP: the connections
// it holds open, and the new ones it opens a second (a token bucket of PerSecond with Burst).
// A SYN over either limit is dropped. 0 (or absent) takes the default.
type ConnectionLimit struct {
	Concurrent int32 `json:"concurrent,omitempty"`
	PerSecond  int32 `json:"perSecond,omitempty"`
	Burst      int32 `json:"burst,omitempty"`
}

// Shield names.
const (
	ShieldSackPanic       = "sack-panic"
	ShieldConnectionLimit = "connection-limit"
)

// Connection-limit defaults: generous enough for a client that keeps a pool of connections
// and reconnects in bursts, low enough to stop one source's multi-connection flood (HTTP/2
// rapid reset and its kin open hundreds to thousands).
const (
	DefaultConcurrentConnections = 256
	DefaultConnectionsPerSecond  = 100
	maxConnectionLimit           = 1_000_000
)

// Limits returns the limits in force: l's, with defaults for what it leaves at 0 (l may be
// nil); the burst defaults to twice the rate.
func (l *ConnectionLimit) Limits() (concurrent, perSecond, burst uint32) {
	concurrent, perSecond = DefaultConcurrentConnections, DefaultConnectionsPerSecond
	if l != nil && l.Concurrent > 0 {
		concurrent = uint32(l.Concurrent)
	}
	if l != nil && l.PerSecond > 0 {
		perSecond = uint32(l.PerSecond)
	}
	burst = 2 * perSecond
	if l != nil && l.Burst > 0 {
		burst = uint32(l.Burst)
	}
	return concurrent, perSecond, burst
}

// Known shields.
var knownShields = map[string]string{
	ShieldSackPanic:       "drop TCP SYNs with an MSS below 500 (CVE-2019-11477/11478/11479)",
	ShieldConnectionLimit: "per-source limits on open and new TCP connections",
}

// Source names sources by address, or by the pods they are.
type Source struct {
	CIDR              string                `json:"cidr,omitempty"`
	Namespace         string                `json:"namespace,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// Override replaces detectors for targets in the namespaces it names.
type Override struct {
	Namespace         string                `json:"namespace,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	Detectors         Detectors             `json:"detectors"`
}

// DeepCopy returns a copy sharing nothing with t.
func (t *ThreatDefense) DeepCopy() *ThreatDefense {
	if t == nil {
		return nil
	}
	b, err := json.Marshal(t)
	if err != nil {
		panic(err)
	}
	out := &ThreatDefense{}
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

// DeepCopyObject makes ThreatDefense a runtime.Object (the lab saves it with the API objects).
func (t *ThreatDefense) DeepCopyObject() runtime.Object { return t.DeepCopy() }

// Defaults fill unset thresholds (documented in docs/threat-defense.md).
const (
	DefaultScanPorts   = 15
	DefaultScanHosts   = 25
	DefaultScanWindow  = 5 * time.Minute
	DefaultBlockFor    = 10 * time.Minute
	DefaultFloodRate   = 500
	DefaultSensitivity = 10
	DefaultPerSource   = 50
	DefaultBurst       = 100
	DefaultRefresh     = time.Hour
)

func defaultThreatDefense(t *ThreatDefense) {
	dets := []*Detectors{&t.Spec.Detectors}
	for i := range t.Spec.Overrides {
		dets = append(dets, &t.Spec.Overrides[i].Detectors)
	}
	for _, d := range dets {
		if s := d.PortScan; s != nil {
			setInt(&s.Ports, DefaultScanPorts)
			setInt(&s.Hosts, DefaultScanHosts)
			setDur(&s.Window, DefaultScanWindow)
			setDur(&s.BlockFor, DefaultBlockFor)
		}
		if f := d.SynFlood; f != nil {
			setInt(&f.MinRate, DefaultFloodRate)
			if f.Sensitivity == 0 {
				f.Sensitivity = DefaultSensitivity
			}
			setInt(&f.PerSource, DefaultPerSource)
			setInt(&f.Burst, DefaultBurst)
			setDur(&f.BlockFor, DefaultBlockFor)
		}
	}
	for i := range t.Spec.Feeds {
		f := &t.Spec.Feeds[i]
		if f.Format == "" {
			f.Format = FormatNetset
		}
		if f.Action == "" {
			f.Action = ActionBlock
		}
		setDur(&f.Refresh, DefaultRefresh)
	}
	for i := range t.Spec.Honeypots {
		if t.Spec.Honeypots[i].Action == "" {
			t.Spec.Honeypots[i].Action = ActionAlert
		}
	}
}

func setInt(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func setDur(v **metav1.Duration, d time.Duration) {
	if *v == nil {
		*v = &metav1.Duration{Duration: d}
	}
}

func validateThreatDefense(t *ThreatDefense) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	errs = append(errs, validateDetectors(&t.Spec.Detectors, spec.Child("detectors"))...)
	names := map[string]bool{}
	for i, f := range t.Spec.Feeds {
		p := spec.Child("feeds").Index(i)
		switch {
		case f.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "every feed needs a name (alerts report it)"))
		case names[f.Name]:
			errs = append(errs, field.Duplicate(p.Child("name"), f.Name))
		default:
			for _, msg := range validation.IsDNS1123Subdomain(f.Name) {
				errs = append(errs, field.Invalid(p.Child("name"), f.Name, msg))
			}
		}
		names[f.Name] = true
		if (f.File == "") == (f.URL == "") {
			errs = append(errs, field.Invalid(p, f.Name, "give exactly one of file and url"))
		}
		if f.URL != "" {
			if u, err := url.Parse(f.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, field.Invalid(p.Child("url"), f.URL, "must be an http:// or https:// URL with a host"))
			}
		}
		errs = append(errs, oneOf(p.Child("format"), f.Format, FormatNetset, FormatSpamhaus)...)
		errs = append(errs, oneOf(p.Child("action"), f.Action, ActionBlock, ActionAlert)...)
		if f.Refresh != nil && f.Refresh.Duration < time.Second {
			errs = append(errs, field.Invalid(p.Child("refresh"), f.Refresh.Duration.String(), "must be at least 1s"))
		}
	}
	for i, h := range t.Spec.Honeypots {
		p := spec.Child("honeypots").Index(i)
		byName := h.Pod != ""
		if byName == (h.PodSelector != nil) {
			errs = append(errs, field.Invalid(p, "", "give either namespace and pod, or podSelector (with an optional namespaceSelector)"))
		}
		if byName && h.Namespace == "" {
			errs = append(errs, field.Required(p.Child("namespace"), "the decoy pod's namespace"))
		}
		if byName && h.NamespaceSelector != nil {
			errs = append(errs, field.Invalid(p.Child("namespaceSelector"), "", "not with pod: use namespace"))
		}
		errs = append(errs, validateOptSelector(h.PodSelector, p.Child("podSelector"))...)
		errs = append(errs, validateOptSelector(h.NamespaceSelector, p.Child("namespaceSelector"))...)
		for j, port := range h.Ports {
			if port < 1 || port > 65535 {
				errs = append(errs, field.Invalid(p.Child("ports").Index(j), port, "must be between 1 and 65535"))
			}
		}
		errs = append(errs, oneOf(p.Child("action"), h.Action, ActionAlert, ActionBlock, ActionQuarantine)...)
	}
	errs = append(errs, validateQuarantineSpec(t.Spec.Quarantine, spec.Child("quarantine"))...)
	for i, s := range t.Spec.Shields {
		p := spec.Child("shields").Index(i)
		if _, ok := knownShields[s.Name]; !ok {
			errs = append(errs, field.NotSupported(p.Child("name"), s.Name, []string{ShieldSackPanic, ShieldConnectionLimit}))
		}
		if l := s.ConnectionLimit; l != nil {
			lp := p.Child("connectionLimit")
			if s.Name != ShieldConnectionLimit {
				errs = append(errs, field.Forbidden(lp, "only the connection-limit shield takes limits"))
			}
			for _, f := range []struct {
				name string
				v    int32
			}{{"concurrent", l.Concurrent}, {"perSecond", l.PerSecond}, {"burst", l.Burst}} {
				if f.v < 0 || f.v > maxConnectionLimit {
					errs = append(errs, field.Invalid(lp.Child(f.name), f.v, fmt.Sprintf("must be between 1 and %d (0 or absent: the default)", maxConnectionLimit)))
				}
			}
			if _, rate, burst := l.Limits(); l.Burst > 0 && burst < rate {
				errs = append(errs, field.Invalid(lp.Child("burst"), l.Burst, fmt.Sprintf("must be at least perSecond (%d)", rate)))
			}
		}
		errs = append(errs, validateOptSelector(s.Selector, p.Child("selector"))...)
		errs = append(errs, validateOptSelector(s.NamespaceSelector, p.Child("namespaceSelector"))...)
	}
	for i, s := range t.Spec.Allowlist {
		p := spec.Child("allowlist").Index(i)
		n := 0
		for _, set := range []bool{s.CIDR != "", s.Namespace != "", s.NamespaceSelector != nil || s.PodSelector != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, field.Invalid(p, "", "give one of cidr, namespace, or namespaceSelector/podSelector"))
		}
		if s.CIDR != "" {
			if _, err := netip.ParsePrefix(s.CIDR); err != nil {
				if _, err2 := netip.ParseAddr(s.CIDR); err2 != nil {
					errs = append(errs, field.Invalid(p.Child("cidr"), s.CIDR, "not an IP address or CIDR"))
				}
			}
		}
		errs = append(errs, validateOptSelector(s.NamespaceSelector, p.Child("namespaceSelector"))...)
		errs = append(errs, validateOptSelector(s.PodSelector, p.Child("podSelector"))...)
	}
	for i, o := range t.Spec.Overrides {
		p := spec.Child("overrides").Index(i)
		if (o.Namespace == "") == (o.NamespaceSelector == nil) {
			errs = append(errs, field.Invalid(p, "", "give one of namespace and namespaceSelector"))
		}
		errs = append(errs, validateOptSelector(o.NamespaceSelector, p.Child("namespaceSelector"))...)
		errs = append(errs, validateDetectors(&o.Detectors, p.Child("detectors"))...)
	}
	return errs
}

func validateDetectors(d *Detectors, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s := d.PortScan; s != nil {
		q := p.Child("portScan")
		errs = append(errs, oneOf(q.Child("action"), s.Action, ActionAlert, ActionBlock, ActionQuarantine)...)
		errs = append(errs, positive(q.Child("ports"), s.Ports, 2, 65535)...)
		errs = append(errs, positive(q.Child("hosts"), s.Hosts, 2, 1<<24)...)
		errs = append(errs, duration(q.Child("window"), s.Window)...)
		errs = append(errs, duration(q.Child("blockFor"), s.BlockFor)...)
	}
	if f := d.SynFlood; f != nil {
		q := p.Child("synFlood")
		errs = append(errs, oneOf(q.Child("action"), f.Action, ActionAlert, ActionRateLimit, ActionBlock)...)
		errs = append(errs, positive(q.Child("minRate"), f.MinRate, 1, 1<<30)...)
		if f.Sensitivity < 1 {
			errs = append(errs, field.Invalid(q.Child("sensitivity"), f.Sensitivity, "must be at least 1 (times the learned rate)"))
		}
		errs = append(errs, positive(q.Child("perSource"), f.PerSource, 1, 1<<20)...)
		errs = append(errs, positive(q.Child("burst"), f.Burst, 1, 1<<20)...)
		errs = append(errs, duration(q.Child("blockFor"), f.BlockFor)...)
	}
	return errs
}

func oneOf(p *field.Path, v string, allowed ...string) field.ErrorList {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	if v == "" {
		return field.ErrorList{field.Required(p, fmt.Sprintf("one of %q", allowed))}
	}
	return field.ErrorList{field.NotSupported(p, v, allowed)}
}

func positive(p *field.Path, v, lo, hi int) field.ErrorList {
	if v < lo || v > hi {
		return field.ErrorList{field.Invalid(p, v, fmt.Sprintf("must be between %d and %d", lo, hi))}
	}
	return nil
}

func duration(p *field.Path, d *metav1.Duration) field.ErrorList {
	if d != nil && d.Duration <= 0 {
		return field.ErrorList{field.Invalid(p, d.Duration.String(), "must be positive")}
	}
	return nil
}

func validateOptSelector(s *metav1.LabelSelector, p *field.Path) field.ErrorList {
	if s == nil {
		return nil
	}
	return validateSelector(s, p)
}
