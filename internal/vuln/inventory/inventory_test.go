package inventory

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/rampart-sec/rampart/internal/vuln"
	"github.com/rampart-sec/rampart/internal/vuln/vulntest"
)

// testImage holds vulnerable and fixed versions of packages the test database knows.
var testImage = vulntest.Image{
	DebianVersion: "12",
	Debs: []vulntest.Deb{
		{Name: "libc6", Source: "glibc", Version: "2.36-9+deb12u1"},       // DSA-5514-1, fixed in +deb12u3
		{Name: "libssl3", Source: "openssl", Version: "3.0.11-1~deb12u2"}, // DSA-5532-1 fixed exactly here
		{Name: "base-files", Version: "12.4+deb12u1"},
	},
	Python:    map[string]string{"requests": "2.25.0"},
	GoModules: []vulntest.GoModule{{Path: "golang.org/x/text", Version: "v0.3.6"}, {Path: "golang.org/x/net", Version: "v0.7.0"}},
}

func TestScanFormats(t *testing.T) {
	root := t.TempDir()
	if err := vulntest.WriteRootFS(root, testImage); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := vulntest.WriteDockerArchive(archive, "registry.example/shop/web:1.0", root); err != nil {
		t.Fatal(err)
	}
	oci := filepath.Join(t.TempDir(), "oci")
	if err := vulntest.WriteOCILayout(oci, root); err != nil {
		t.Fatal(err)
	}
	goVersion := strings.TrimPrefix(runtime.Version(), "go")
	want := []string{
		"Debian:12 base-files 12.4+deb12u1",
		"Debian:12 libc6 2.36-9+deb12u1 (glibc)",
		"Debian:12 libssl3 3.0.11-1~deb12u2 (openssl)",
		"Go golang.org/x/net 0.7.0",
		"Go golang.org/x/text 0.3.6",
		"Go stdlib " + goVersion,
		"PyPI requests 2.25.0",
	}
	for _, tc := range []struct {
		target string
		kind   Kind
	}{{root, KindRootFS}, {archive, KindDockerArchive}, {oci, KindOCILayout}} {
		t.Run(string(tc.kind), func(t *testing.T) {
			res, err := Scan(context.Background(), tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != tc.kind {
				t.Errorf("kind = %s, want %s", res.Kind, tc.kind)
			}
			var got []string
			for _, p := range res.Packages {
				if p.Name == "example.com/app" {
					continue // the binary's main module
				}
				s := p.Ecosystem + " " + p.Name + " " + p.Version
				if p.Source != "" {
					s += " (" + p.Source + ")"
				}
				got = append(got, s)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("packages:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestScanErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "not-an-image.tar")
	if err := writeFile(bad, "garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(context.Background(), bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Scan(garbage) err = %v, want one naming the file", err)
	}
	if _, err := Scan(context.Background(), "/nonexistent/dir/image.tar"); err == nil {
		t.Error("Scan(missing path) succeeded")
	}
}

var _ = vuln.Installed{}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

// TestScanRegistry pulls the image from a registry (an in-process one on loopback).
func TestScanRegistry(t *testing.T) {
	root := t.TempDir()
	if err := vulntest.WriteRootFS(root, vulntest.Image{DebianVersion: "12", Debs: []vulntest.Deb{{Name: "libc6", Source: "glibc", Version: "2.36-9+deb12u1"}}}); err != nil {
		t.Fatal(err)
	}
	img, err := vulntest.V1Image(root)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/shop/web:1.0"
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	res, err := Scan(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindRegistry || len(res.Packages) != 1 || res.Packages[0].Name != "libc6" {
		t.Errorf("scan of %s = %+v", ref, res)
	}
}

// TestScanOtherEcosystems: Alpine packages (with their origin, which advisories name), npm and
// Cargo lockfiles.
func TestScanOtherEcosystems(t *testing.T) {
	root := t.TempDir()
	err := vulntest.WriteRootFS(root, vulntest.Image{Files: map[string]string{
		"etc/os-release": "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\n",
		"lib/apk/db/installed": "P:libcrypto3\nV:3.1.3-r0\nA:x86_64\no:openssl\nm:Maintainer <m@example.org>\n\n" +
			"P:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\n",
		"app/package-lock.json": `{"name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {"": {"name": "app", "version": "1.0.0"}, "node_modules/lodash": {"version": "4.17.20"}}}`,
		"app/Cargo.lock": "version = 3\n\n[[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
	}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Scan(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range res.Packages {
		s := p.Ecosystem + " " + p.Name + " " + p.Version
		if p.Source != "" {
			s += " (" + p.Source + ")"
		}
		got = append(got, s)
	}
	want := []string{
		"Alpine:v3.18 libcrypto3 3.1.3-r0 (openssl)",
		"Alpine:v3.18 musl 1.2.4-r2 (musl)",
		"crates.io smallvec 1.6.0",
		"npm lodash 4.17.20",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("packages:\n got %q\nwant %q", got, want)
	}
}
