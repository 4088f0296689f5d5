package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/vuln/report"
	"github.com/rampart-sec/rampart/internal/vuln/vulntest"
)

// runCLI runs rampart in-process and returns stdout and the error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// scanFixture imports the test advisories and writes a docker-save tarball of an image with
// vulnerable and fixed packages.
func scanFixture(t *testing.T) (db, tarball string) {
	t.Helper()
	db = filepath.Join(t.TempDir(), "db")
	if out, err := runCLI(t, "db", "import", "--db", db, "../../internal/vuln/testdata/osv"); err != nil || !strings.Contains(out, "imported 9 advisories") {
		t.Fatalf("db import: %v\n%s", err, out)
	}
	root := t.TempDir()
	err := vulntest.WriteRootFS(root, vulntest.Image{
		DebianVersion: "12",
		Debs: []vulntest.Deb{
			{Name: "libc6", Source: "glibc", Version: "2.36-9+deb12u1"},
			{Name: "libssl3", Source: "openssl", Version: "3.0.11-1~deb12u2"},
		},
		Python:    map[string]string{"requests": "2.31.0"},
		GoModules: []vulntest.GoModule{{Path: "golang.org/x/text", Version: "v0.3.7"}, {Path: "golang.org/x/net", Version: "v0.6.0"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tarball = filepath.Join(t.TempDir(), "web.tar")
	if err := vulntest.WriteDockerArchive(tarball, "registry.example/shop/web:1.0", root); err != nil {
		t.Fatal(err)
	}
	return db, tarball
}

func TestScanImage(t *testing.T) {
	db, tarball := scanFixture(t)
	out, err := runCLI(t, "scan", "image", "--db", db, "-o", "json", tarball)
	if err != nil {
		t.Fatal(err)
	}
	var img report.Image
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got []string
	for _, v := range img.Vulnerabilities {
		got = append(got, v.Package.Name+"@"+v.Package.Version+" "+v.ID+" fixed="+v.Fixed)
	}
	// Exactly the advisories the database holds for these versions: x/text 0.3.7 is past
	// GO-2021-0113's fix, requests 2.31.0 and libssl3 are fixed versions.
	want := []string{
		"libc6@2.36-9+deb12u1 DSA-5514-1 fixed=2.36-9+deb12u3",
		"golang.org/x/net@0.6.0 GO-2023-1571 fixed=0.7.0",
		"golang.org/x/text@0.3.7 GO-2022-1059 fixed=0.3.8",
		"golang.org/x/text@0.3.7 GO-2026-5970 fixed=0.39.0",
		"golang.org/x/text@0.3.7 GO-2026-6629 fixed=0.41.0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("findings:\n got %q\nwant %q", got, want)
	}
	table, err := runCLI(t, "scan", "image", "--db", db, tarball)
	if err != nil || !strings.Contains(table, "5 vulnerabilities (1 high, 4 unrated)") || !strings.Contains(table, "CVE-2023-4527,CVE-2023-4806,CVE-2023-4911") {
		t.Errorf("table: %v\n%s", err, table)
	}
	sarif, err := runCLI(t, "scan", "image", "--db", db, "-o", "sarif", tarball)
	if err != nil {
		t.Fatal(err)
	}
	var log struct {
		Version string `json:"version"`
		Runs    []struct {
			Results []struct {
				RuleID string `json:"ruleId"`
				Level  string `json:"level"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(sarif), &log); err != nil || log.Version != "2.1.0" || len(log.Runs[0].Results) != 5 || log.Runs[0].Results[0].Level != "error" {
		t.Errorf("sarif: %v %+v", err, log)
	}
}

const clusterYAML = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: exposed, labels: {app: exposed}}
spec: {containers: [{name: web, image: "registry.example/shop/web:1.0", ports: [{containerPort: 443}]}]}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: locked, labels: {app: locked}}
spec: {containers: [{name: web, image: "registry.example/shop/web:1.0", ports: [{containerPort: 443}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: other, labels: {app: other}}
spec: {containers: [{name: db, image: "registry.example/shop/db:2.0"}]}
status: {podIP: 10.244.0.12}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: default-deny}
spec: {podSelector: {matchLabels: {app: locked}}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: public-https}
spec:
  podSelector: {matchLabels: {app: exposed}}
  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}], ports: [{port: 443}]}]
`

func TestScanCluster(t *testing.T) {
	db, tarball := scanFixture(t)
	manifests := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(manifests, []byte(clusterYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	// Split the two pods into two images (same tarball) to compare their ranks one by one.
	out, err := runCLI(t, "scan", "cluster", "--db", db, "-f", manifests, "-o", "json", "--no-pull",
		"--image", "registry.example/shop/web:1.0="+tarball)
	if err == nil || !strings.Contains(err.Error(), "1 image(s) could not be scanned") {
		t.Errorf("err = %v, want the unscanned db image reported", err)
	}
	var r report.Cluster
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(r.Unscanned) != 1 || r.Unscanned[0].Image != "registry.example/shop/db:2.0" {
		t.Errorf("unscanned = %+v", r.Unscanned)
	}
	// The same image in two pods, one open to 0.0.0.0/0 and one behind default deny: each
	// vulnerability is a finding per exposure, ranked apart and explained.
	if len(r.Findings) != 10 {
		t.Fatalf("findings = %d, want 10 (5 advisories x 2 exposures)", len(r.Findings))
	}
	top := r.Findings[0]
	if top.ID != "DSA-5514-1" || top.Exposure != "internet" || top.Rank != 7.8 || len(top.Pods) != 1 || top.Pods[0].Pod != "shop/exposed" {
		t.Errorf("top finding = %s %s %.2f %+v, want DSA-5514-1 internet 7.80 on shop/exposed", top.ID, top.Exposure, top.Rank, top.Pods)
	}
	wantExpl := `high (CVSS 7.8), fixed in 2.36-9+deb12u3: pod shop/exposed accepts TCP 443 from any address (ingress allowed by rule 0 of NetworkPolicy shop/public-https)`
	if top.Explanation != wantExpl {
		t.Errorf("explanation:\n got %s\nwant %s", top.Explanation, wantExpl)
	}
	var lockedGlibc *report.Finding
	for i, f := range r.Findings {
		if f.ID == "DSA-5514-1" && f.Exposure == "none" {
			lockedGlibc = &r.Findings[i]
		}
	}
	if lockedGlibc == nil || lockedGlibc.Rank != 0.78 || len(lockedGlibc.Pods) != 1 || lockedGlibc.Pods[0].Pod != "shop/locked" ||
		lockedGlibc.Explanation != `high (CVSS 7.8), fixed in 2.36-9+deb12u3: pod shop/locked accepts no connections on its ports (isolated for ingress by NetworkPolicy, and no rule allows it)` {
		t.Errorf("the locked pod's glibc finding = %+v", lockedGlibc)
	}

	// The same image in the locked pod alone ranks lower, and says why.
	lockedOnly := strings.Replace(clusterYAML, `name: exposed, labels: {app: exposed}}
spec: {containers: [{name: web, image: "registry.example/shop/web:1.0"`, `name: exposed, labels: {app: exposed}}
spec: {containers: [{name: web, image: "registry.example/shop/web:2.0"`, 1)
	if err := os.WriteFile(manifests, []byte(lockedOnly), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "scan", "cluster", "--db", db, "-f", manifests, "-o", "json", "--no-pull",
		"--image", "registry.example/shop/web:1.0="+tarball, "--image", "registry.example/shop/web:2.0="+tarball, "--image", "registry.example/shop/db:2.0="+tarball)
	if err != nil {
		t.Fatal(err)
	}
	r = report.Cluster{}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	rank := map[string]report.Finding{}
	for _, f := range r.Findings {
		if f.ID == "DSA-5514-1" {
			rank[f.Image] = f
		}
	}
	exposed, locked := rank["registry.example/shop/web:2.0"], rank["registry.example/shop/web:1.0"]
	if exposed.Exposure != "internet" || locked.Exposure != "none" || !(exposed.Rank > locked.Rank) {
		t.Errorf("exposed %s %.2f, locked %s %.2f: want internet ranked above none", exposed.Exposure, exposed.Rank, locked.Exposure, locked.Rank)
	}
	wantLocked := `high (CVSS 7.8), fixed in 2.36-9+deb12u3: pod shop/locked accepts no connections on its ports (isolated for ingress by NetworkPolicy, and no rule allows it)`
	if locked.Explanation != wantLocked {
		t.Errorf("locked explanation:\n got %s\nwant %s", locked.Explanation, wantLocked)
	}
	if db := rank["registry.example/shop/db:2.0"]; !strings.Contains(db.Explanation, "declares no container ports") {
		t.Errorf("db explanation = %q", db.Explanation)
	}
}

func TestScanErrors(t *testing.T) {
	if _, err := runCLI(t, "scan", "image", "--db", t.TempDir(), "x.tar"); err == nil || !strings.Contains(err.Error(), "rampart db import") {
		t.Errorf("missing db: %v", err)
	}
	if _, err := runCLI(t, "scan", "cluster", "--db", t.TempDir()); err == nil || !strings.Contains(err.Error(), "-f PATH") {
		t.Errorf("no source: %v", err)
	}
	if _, err := runCLI(t, "scan", "cluster", "-f", "x.yaml", "--image", "noequals"); err == nil || !strings.Contains(err.Error(), "REF=PATH") {
		t.Errorf("bad --image: %v", err)
	}
}
