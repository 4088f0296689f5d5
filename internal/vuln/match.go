package vuln

import (
	"fmt"
	"sort"
	"strings"
)

// Installed is one package found in an image.
type Installed struct {
	Ecosystem string `json:"ecosystem"` // OSV ecosystem, with release when known ("Debian:12")
	Name      string `json:"name"`
	Version   string `json:"version"`
	// Source is the source package (Debian, Alpine origin) advisories are filed under, if any.
	Source string `json:"source,omitempty"`
	// SourceVersion is the source package's version when it differs from Version (binNMUs).
	SourceVersion string   `json:"sourceVersion,omitempty"`
	Location      []string `json:"location,omitempty"` // files it was found in
}

// Vulnerability is one advisory affecting one installed package.
type Vulnerability struct {
	Package  Installed `json:"package"`
	ID       string    `json:"id"`
	Aliases  []string  `json:"aliases,omitempty"`
	Summary  string    `json:"summary,omitempty"`
	Severity Severity  `json:"severity"`
	// Fixed is the lowest version that fixes it ("" when no fix is published).
	Fixed string `json:"fixed,omitempty"`
	// FixAvailable says whether a fixed version is published.
	FixAvailable bool `json:"fixAvailable"`
}

// CVEs returns the advisory's CVE identifiers (its ID or aliases).
func (v Vulnerability) CVEs() []string {
	var out []string
	for _, id := range append([]string{v.ID}, v.Aliases...) {
		if len(id) > 4 && id[:4] == "CVE-" {
			out = append(out, id)
		}
	}
	return out
}

// Match returns the advisories affecting pkgs, sorted by severity then ID. A version that the
// ecosystem's rules cannot parse is an error naming the package: a silent miss would read as
// "not vulnerable".
func (db *DB) Match(pkgs []Installed) ([]Vulnerability, error) {
	// Binary packages built from one source (libc6, libc-bin, locales: glibc) share its
	// advisories: read each key once per scan.
	read := map[string][]Advisory{}
	lookup := func(eco, name string) ([]Advisory, error) {
		k := key(eco, name)
		if advs, ok := read[k]; ok {
			return advs, nil
		}
		advs, err := db.Lookup(eco, name)
		if err == nil {
			read[k] = advs
		}
		return advs, err
	}
	var out []Vulnerability
	for _, p := range pkgs {
		vs, err := matchOne(p, lookup)
		if err != nil {
			return nil, err
		}
		out = append(out, vs...)
	}
	SortVulnerabilities(out)
	return out, nil
}

func matchOne(p Installed, lookup func(eco, name string) ([]Advisory, error)) ([]Vulnerability, error) {
	names := []string{p.Name}
	if p.Source != "" && p.Source != p.Name {
		names = append(names, p.Source)
	}
	version := p.Version
	if BaseEcosystem(p.Ecosystem) == "Go" && (p.Name == "stdlib" || p.Name == "toolchain") {
		version = strings.TrimPrefix(version, "go") // runtime.Version() spelling
	}
	seen := map[string]bool{}
	var out []Vulnerability
	for _, name := range names {
		advs, err := lookup(p.Ecosystem, name)
		if err != nil {
			return nil, err
		}
		// The version the advisories under this name speak of.
		q := p
		q.Version = version
		if name == p.Source && p.SourceVersion != "" {
			q.Version = p.SourceVersion
		}
		for i := range advs {
			adv := &advs[i]
			if seen[adv.ID] {
				continue
			}
			v, ok, err := check(adv, q, name)
			if err != nil {
				return nil, fmt.Errorf("%s %s %s: %w", p.Ecosystem, p.Name, p.Version, err)
			}
			if ok {
				v.Package = p
				v.FixAvailable = v.Fixed != ""
				seen[adv.ID] = true
				out = append(out, v)
			}
		}
	}
	return out, nil
}

// check decides one advisory for a package known under name (its own or its source's).
func check(adv *Advisory, p Installed, name string) (Vulnerability, bool, error) {
	v := Vulnerability{ID: adv.ID, Aliases: adv.Aliases, Summary: adv.Summary} // the caller sets Package
	hit := false
	want := key(p.Ecosystem, name)
	for i := range adv.Affected {
		aff := &adv.Affected[i]
		if key(aff.Package.Ecosystem, aff.Package.Name) != want {
			continue
		}
		m, err := aff.Check(p.Ecosystem, p.Version)
		if err != nil {
			return v, false, err
		}
		if !m.Affected {
			continue
		}
		sev := severityOf(adv, aff)
		if !hit || sev.RankScore() > v.Severity.RankScore() {
			v.Severity = sev
		}
		if !hit || (m.Fixed != "" && (v.Fixed == "" || less(aff.Package.Ecosystem, m.Fixed, v.Fixed))) {
			v.Fixed = m.Fixed
		}
		hit = true
	}
	return v, hit, nil
}

// SortVulnerabilities orders by severity (highest first), then package, then ID.
func SortVulnerabilities(vs []Vulnerability) {
	sort.SliceStable(vs, func(i, j int) bool {
		a, b := vs[i], vs[j]
		if ra, rb := a.Severity.RankScore(), b.Severity.RankScore(); ra != rb {
			return ra > rb
		}
		if a.Package.Name != b.Package.Name {
			return a.Package.Name < b.Package.Name
		}
		return a.ID < b.ID
	})
}
