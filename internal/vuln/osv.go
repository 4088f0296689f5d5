package vuln

import (
	"fmt"
	"sort"
	"strings"

	"github.com/google/osv-scalibr/semantic"
)

// Advisory is the part of an OSV record rampart uses (https://ossf.github.io/osv-schema/).
type Advisory struct {
	ID               string         `json:"id"`
	Modified         string         `json:"modified,omitempty"`
	Withdrawn        string         `json:"withdrawn,omitempty"`
	Aliases          []string       `json:"aliases,omitempty"`
	Summary          string         `json:"summary,omitempty"`
	Details          string         `json:"details,omitempty"`
	Severity         []OSVSeverity  `json:"severity,omitempty"`
	Affected         []Affected     `json:"affected,omitempty"`
	DatabaseSpecific map[string]any `json:"database_specific,omitempty"`
}

// OSVSeverity is a severity entry: a CVSS vector (type CVSS_V2/V3/V4) or an ecosystem rating.
type OSVSeverity struct {
	Type  string `json:"type"`
	Score string `json:"score"`
}

// Affected is one affected package with its vulnerable versions.
type Affected struct {
	Package           Package        `json:"package"`
	Severity          []OSVSeverity  `json:"severity,omitempty"`
	Ranges            []Range        `json:"ranges,omitempty"`
	Versions          []string       `json:"versions,omitempty"`
	EcosystemSpecific map[string]any `json:"ecosystem_specific,omitempty"`
	DatabaseSpecific  map[string]any `json:"database_specific,omitempty"`
}

// Package names a package in an ecosystem ("Go", "Debian:12", "PyPI", ...).
type Package struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
	PURL      string `json:"purl,omitempty"`
}

// Range is a version range as a list of events.
type Range struct {
	Type   string  `json:"type"` // SEMVER, ECOSYSTEM or GIT
	Events []Event `json:"events"`
}

// Event is one boundary of a range; exactly one field is set.
type Event struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
	Limit        string `json:"limit,omitempty"`
}

func (e Event) version() string {
	switch {
	case e.Introduced != "":
		return e.Introduced
	case e.Fixed != "":
		return e.Fixed
	case e.LastAffected != "":
		return e.LastAffected
	}
	return e.Limit
}

// BaseEcosystem strips the release suffix: "Debian:12" -> "Debian".
func BaseEcosystem(eco string) string {
	base, _, _ := strings.Cut(eco, ":")
	return base
}

// NormalizeName returns the name under which an ecosystem's registry treats two spellings as the
// same package (PEP 503 for PyPI); other ecosystems compare names exactly.
func NormalizeName(eco, name string) string {
	switch BaseEcosystem(eco) {
	case "PyPI":
		var b strings.Builder
		dash := false
		for _, r := range strings.ToLower(name) {
			if r == '-' || r == '_' || r == '.' {
				if !dash {
					b.WriteByte('-')
				}
				dash = true
				continue
			}
			dash = false
			b.WriteRune(r)
		}
		return b.String()
	}
	return name
}

// Match is the verdict of one affected entry for one installed version.
type Match struct {
	Affected bool
	// Fixed is the lowest fixed version above the installed one ("" when no fix is published).
	Fixed string
}

// Check decides whether version is affected under a. eco is the installed package's ecosystem
// (with release suffix when known): an entry for another release ("Debian:11" against
// "Debian:12") never matches.
func (a *Affected) Check(eco, version string) (Match, error) {
	if !sameRelease(a.Package.Ecosystem, eco) {
		return Match{}, nil
	}
	v, err := semantic.Parse(version, a.Package.Ecosystem)
	if err != nil {
		return Match{}, fmt.Errorf("%s version %q: %w", a.Package.Ecosystem, version, err)
	}
	var m Match
	for _, listed := range a.Versions {
		if c, err := v.CompareStr(listed); err == nil && c == 0 {
			m.Affected = true
		}
	}
	for _, r := range a.Ranges {
		if r.Type != "SEMVER" && r.Type != "ECOSYSTEM" {
			continue // GIT ranges name commits, not versions
		}
		in, fixed, err := inRange(a.Package.Ecosystem, v, r.Events)
		if err != nil {
			return Match{}, fmt.Errorf("%s range: %w", a.Package.Ecosystem, err)
		}
		if in {
			m.Affected = true
			if fixed != "" && (m.Fixed == "" || less(a.Package.Ecosystem, fixed, m.Fixed)) {
				m.Fixed = fixed
			}
		}
	}
	return m, nil
}

func sameRelease(advisory, installed string) bool {
	ab, ar, aok := strings.Cut(advisory, ":")
	ib, ir, iok := strings.Cut(installed, ":")
	if ab != ib {
		return false
	}
	// An advisory for every release, or a package whose release is unknown, matches.
	return !aok || !iok || ar == ir
}

func less(eco, a, b string) bool {
	v, err := semantic.Parse(a, eco)
	if err != nil {
		return a < b
	}
	c, err := v.CompareStr(b)
	return err == nil && c < 0
}

// inRange applies the OSV evaluation: events sorted by version, introduced opens an interval;
// fixed and limit close it before their version, last_affected after it. It also returns the
// first fixed version above v, when v is affected.
func inRange(eco string, v semantic.Version, events []Event) (bool, string, error) {
	type ev struct {
		Event
		ver semantic.Version // nil for introduced "0", which sorts first
	}
	evs := make([]ev, 0, len(events))
	for _, e := range events {
		x := ev{Event: e}
		if e.Introduced != "0" {
			pv, err := semantic.Parse(e.version(), eco)
			if err != nil {
				return false, "", fmt.Errorf("event version %q: %w", e.version(), err)
			}
			x.ver = pv
		}
		evs = append(evs, x)
	}
	var sortErr error
	sort.SliceStable(evs, func(i, j int) bool {
		a, b := evs[i].ver, evs[j].ver
		if a == nil || b == nil {
			return a == nil && b != nil
		}
		c, err := a.Compare(b)
		if err != nil {
			sortErr = err
		}
		return c < 0
	})
	if sortErr != nil {
		return false, "", sortErr
	}
	affected := false
	for _, e := range evs {
		if e.ver == nil {
			affected = true
			continue
		}
		c, err := v.Compare(e.ver) // sign of v - event
		if err != nil {
			return false, "", err
		}
		switch {
		case e.Introduced != "":
			if c >= 0 {
				affected = true
			}
		case e.Fixed != "", e.Limit != "":
			if c >= 0 {
				affected = false
			}
		case e.LastAffected != "":
			if c > 0 {
				affected = false
			}
		}
	}
	if !affected {
		return false, "", nil
	}
	for _, e := range evs {
		if e.Fixed == "" {
			continue
		}
		if c, err := v.Compare(e.ver); err == nil && c < 0 {
			return true, e.Fixed, nil
		}
	}
	return true, "", nil
}
