package vuln

import (
	"archive/zip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestAffectedCheck(t *testing.T) {
	rng := func(eco string, events ...Event) Affected {
		return Affected{Package: Package{Ecosystem: eco, Name: "p"}, Ranges: []Range{{Type: "ECOSYSTEM", Events: events}}}
	}
	intro := func(v string) Event { return Event{Introduced: v} }
	fixed := func(v string) Event { return Event{Fixed: v} }
	last := func(v string) Event { return Event{LastAffected: v} }
	tests := []struct {
		name      string
		aff       Affected
		eco, ver  string
		want      bool
		wantFixed string
	}{
		{"semver below fix", rng("Go", intro("0"), fixed("1.19.6")), "Go", "1.19.5", true, "1.19.6"},
		{"semver at fix", rng("Go", intro("0"), fixed("1.19.6")), "Go", "1.19.6", false, ""},
		{"semver v prefix", rng("Go", intro("0"), fixed("0.7.0")), "Go", "v0.6.0", true, "0.7.0"},
		{"second interval", rng("Go", intro("0"), fixed("1.19.6"), intro("1.20.0-0"), fixed("1.20.1")), "Go", "1.20.0", true, "1.20.1"},
		{"between intervals", rng("Go", intro("0"), fixed("1.19.6"), intro("1.20.0-0"), fixed("1.20.1")), "Go", "1.19.9", false, ""},
		{"events out of order", rng("Go", fixed("1.20.1"), intro("1.20.0-0"), fixed("1.19.6"), intro("0")), "Go", "1.20.0", true, "1.20.1"},
		{"pseudo-version", rng("Go", intro("0"), fixed("0.3.8")), "Go", "v0.3.8-0.20220722155223-a9213eeb770e", true, "0.3.8"},
		{"last_affected inclusive", rng("PyPI", intro("1.0"), last("1.4")), "PyPI", "1.4", true, ""},
		{"past last_affected", rng("PyPI", intro("1.0"), last("1.4")), "PyPI", "1.4.post1", false, ""},
		{"pep440 pre-release below fix", rng("PyPI", intro("2.3.0"), fixed("2.31.0")), "PyPI", "2.31.0rc1", true, "2.31.0"},
		{"pep440 below introduced", rng("PyPI", intro("2.3.0"), fixed("2.31.0")), "PyPI", "2.2.1", false, ""},
		{"debian tilde sorts first", rng("Debian:12", intro("0"), fixed("3.0.11-1~deb12u2")), "Debian:12", "3.0.11-1~deb12u1", true, "3.0.11-1~deb12u2"},
		{"debian tilde at fix", rng("Debian:12", intro("0"), fixed("3.0.11-1~deb12u2")), "Debian:12", "3.0.11-1", false, ""},
		{"debian epoch", rng("Debian:12", intro("0"), fixed("1:2.0-1")), "Debian:12", "3.0-1", true, "1:2.0-1"},
		{"debian other release", rng("Debian:11", intro("0"), fixed("9.9")), "Debian:12", "1.0", false, ""},
		{"release unknown", rng("Debian:11", intro("0"), fixed("9.9")), "Debian", "1.0", true, "9.9"},
		{"alpine revision below fix", rng("Alpine:v3.18", intro("0"), fixed("3.1.4-r0")), "Alpine:v3.18", "3.1.3-r0", true, "3.1.4-r0"},
		{"alpine later revision", rng("Alpine:v3.18", intro("0"), fixed("3.1.4-r0")), "Alpine:v3.18", "3.1.4-r1", false, ""},
		{"npm semver prerelease", rng("npm", intro("0"), fixed("4.17.21")), "npm", "4.17.21-beta.1", true, "4.17.21"},
		{"cargo", rng("crates.io", intro("0"), fixed("1.6.1")), "crates.io", "1.6.0", true, "1.6.1"},
		{"maven qualifiers", rng("Maven", intro("2.0-beta9"), fixed("2.15.0")), "Maven", "2.14.1", true, "2.15.0"},
		{"maven rc below release", rng("Maven", intro("0"), fixed("2.15.0")), "Maven", "2.15.0-rc1", true, "2.15.0"},
		{"listed version", Affected{Package: Package{Ecosystem: "npm", Name: "p"}, Versions: []string{"1.2.3"}}, "npm", "1.2.3", true, ""},
		{"unlisted version", Affected{Package: Package{Ecosystem: "npm", Name: "p"}, Versions: []string{"1.2.3"}}, "npm", "1.2.4", false, ""},
		{"git range ignored", Affected{Package: Package{Ecosystem: "Go", Name: "p"}, Ranges: []Range{{Type: "GIT", Events: []Event{intro("0")}}}}, "Go", "1.0.0", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.aff.Check(tc.eco, tc.ver)
			if err != nil {
				t.Fatal(err)
			}
			if m.Affected != tc.want || m.Fixed != tc.wantFixed {
				t.Errorf("Check(%s %s) = %+v, want affected=%v fixed=%q", tc.eco, tc.ver, m, tc.want, tc.wantFixed)
			}
		})
	}
}

func TestSeverity(t *testing.T) {
	tests := []struct {
		adv   Advisory
		score float64
		level string
	}{
		{Advisory{Severity: []OSVSeverity{{Type: "CVSS_V3", Score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}}}, 9.8, LevelCritical},
		{Advisory{Severity: []OSVSeverity{{Type: "CVSS_V3", Score: "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:N/A:N"}}}, 5.3, LevelMedium},
		{Advisory{Severity: []OSVSeverity{{Type: "CVSS_V4", Score: "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}}}, 9.3, LevelCritical},
		{Advisory{DatabaseSpecific: map[string]any{"severity": "HIGH"}}, 0, LevelHigh},
		{Advisory{}, 0, LevelUnknown},
	}
	for _, tc := range tests {
		aff := Affected{}
		s := severityOf(&tc.adv, &aff)
		if s.Score != tc.score || s.Level != tc.level {
			t.Errorf("severityOf(%v) = %+v, want %v %s", tc.adv.Severity, s, tc.score, tc.level)
		}
	}
}

func importTestDB(t *testing.T, paths ...string) *DB {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "db")
	if len(paths) == 0 {
		paths = []string{"testdata/osv"}
	}
	if _, err := Import(dir, paths, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func ids(vs []Vulnerability) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Package.Name+" "+v.ID+" fixed="+v.Fixed)
	}
	return out
}

func TestMatchRealAdvisories(t *testing.T) {
	db := importTestDB(t)
	if got := db.Info(); got.Advisories != 9 || got.Ecosystems["Go"] != 6 || got.Ecosystems["Debian"] != 2 || got.Ecosystems["PyPI"] != 1 {
		t.Fatalf("import info = %+v", got)
	}
	pkgs := []Installed{
		{Ecosystem: "Go", Name: "golang.org/x/text", Version: "v0.3.6"},
		{Ecosystem: "Go", Name: "golang.org/x/net", Version: "v0.7.0"}, // the fixed version: no finding
		{Ecosystem: "Go", Name: "stdlib", Version: "go1.20.0"},
		{Ecosystem: "Debian:12", Name: "libc6", Source: "glibc", Version: "2.36-9+deb12u1"},
		{Ecosystem: "Debian:12", Name: "libssl3", Source: "openssl", Version: "3.0.11-1~deb12u2"}, // fixed
		{Ecosystem: "PyPI", Name: "Requests", Version: "2.25.0"},
	}
	got, err := db.Match(pkgs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"libc6 DSA-5514-1 fixed=2.36-9+deb12u3",
		"requests GHSA-j8r2-6x86-q33q fixed=2.31.0",
		"golang.org/x/text GO-2021-0113 fixed=0.3.7",
		"golang.org/x/text GO-2022-1059 fixed=0.3.8",
		"golang.org/x/text GO-2026-5970 fixed=0.39.0",
		"golang.org/x/text GO-2026-6629 fixed=0.41.0",
		"stdlib GO-2023-1571 fixed=1.20.1",
	}
	for i := range got {
		got[i].Package.Name = strings.ToLower(got[i].Package.Name)
	}
	if g := ids(got); !reflect.DeepEqual(g, want) {
		t.Errorf("findings:\n got %q\nwant %q", g, want)
	}
	if got[0].Severity.Level != LevelHigh || got[0].Severity.Score != 7.8 {
		t.Errorf("glibc severity = %+v, want high 7.8", got[0].Severity)
	}
	if cves := got[0].CVEs(); len(cves) != 3 {
		t.Errorf("CVEs = %v", cves)
	}
}

func TestImportZipAndNewest(t *testing.T) {
	dir := t.TempDir()
	zpath := filepath.Join(dir, "all.zip")
	f, err := os.Create(zpath)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for name, body := range map[string]string{
		"A-1.json": `{"id":"A-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"left-pad"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.0.0"}]}]}]}`,
		"A-2.json": `{"id":"A-2","modified":"2024-01-01T00:00:00Z","withdrawn":"2024-02-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"left-pad"},"versions":["0.1.0"]}]}`,
	} {
		w, _ := zw.Create(name)
		w.Write([]byte(body))
	}
	zw.Close()
	f.Close()
	// A newer A-1 in a directory beside the zip replaces the zip's version.
	os.WriteFile(filepath.Join(dir, "A-1-new.json"), []byte(`{"id":"A-1","modified":"2025-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"left-pad"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"2.0.0"}]}]}]}`), 0o644)
	db := importTestDB(t, dir)
	if info := db.Info(); info.Advisories != 1 || info.Withdrawn != 1 {
		t.Fatalf("info = %+v", info)
	}
	got, err := db.Match([]Installed{{Ecosystem: "npm", Name: "left-pad", Version: "1.5.0"}})
	if err != nil {
		t.Fatal(err)
	}
	if g := ids(got); !reflect.DeepEqual(g, []string{"left-pad A-1 fixed=2.0.0"}) {
		t.Errorf("got %q", g)
	}
}

func TestImportErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"id": 3}`), 0o644)
	_, err := Import(filepath.Join(t.TempDir(), "db"), []string{dir}, ImportOptions{})
	if err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Fatalf("err = %v, want one naming bad.json", err)
	}
	if _, err := Import(filepath.Join(t.TempDir(), "db"), []string{t.TempDir()}, ImportOptions{}); err == nil {
		t.Fatal("empty source imported without error")
	}
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "rampart db import") {
		t.Fatalf("Open(empty) err = %v", err)
	}
}
