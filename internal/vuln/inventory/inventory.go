// Package inventory lists the software packages in a container image or root filesystem with
// osv-scalibr's extractors: OS packages (dpkg, apk, rpm) and language packages (Go binaries and
// modules, npm, PyPI, Maven, Cargo). Images are read from a docker-save tarball, an OCI image
// layout directory or a registry reference; layers are squashed as a container would see them.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	scalibr "github.com/google/osv-scalibr"
	"github.com/google/osv-scalibr/artifact/image/layerscanning/image"
	cpb "github.com/google/osv-scalibr/binary/proto/config_go_proto"
	"github.com/google/osv-scalibr/extractor"
	"github.com/google/osv-scalibr/extractor/filesystem"
	"github.com/google/osv-scalibr/extractor/filesystem/language/golang/gobinary"
	"github.com/google/osv-scalibr/extractor/filesystem/language/golang/gomod"
	"github.com/google/osv-scalibr/extractor/filesystem/language/java/archive"
	"github.com/google/osv-scalibr/extractor/filesystem/language/java/pomxml"
	"github.com/google/osv-scalibr/extractor/filesystem/language/javascript/packagejson"
	"github.com/google/osv-scalibr/extractor/filesystem/language/javascript/packagelockjson"
	"github.com/google/osv-scalibr/extractor/filesystem/language/python/requirements"
	"github.com/google/osv-scalibr/extractor/filesystem/language/python/wheelegg"
	"github.com/google/osv-scalibr/extractor/filesystem/language/rust/cargolock"
	"github.com/google/osv-scalibr/extractor/filesystem/os/apk"
	apkmeta "github.com/google/osv-scalibr/extractor/filesystem/os/apk/metadata"
	"github.com/google/osv-scalibr/extractor/filesystem/os/dpkg"
	dpkgmeta "github.com/google/osv-scalibr/extractor/filesystem/os/dpkg/metadata"
	"github.com/google/osv-scalibr/extractor/filesystem/os/rpm"
	scalibrfs "github.com/google/osv-scalibr/fs"
	"github.com/google/osv-scalibr/plugin"

	"github.com/rampart-sec/rampart/internal/vuln"
)

// Kind says what a scanned path was.
type Kind string

const (
	KindDockerArchive Kind = "docker-archive"
	KindOCILayout     Kind = "oci-layout"
	KindRootFS        Kind = "rootfs"
	KindRegistry      Kind = "registry"
)

// Result is the inventory of one image or filesystem.
type Result struct {
	Target   string           `json:"target"`
	Kind     Kind             `json:"kind"`
	Packages []vuln.Installed `json:"packages"`
}

// extractors are the inventory plugins rampart runs: the package managers container images
// carry. Secret scanners, detectors and enrichers are left out (they are not inventory and some
// need the network).
func extractors() ([]plugin.Plugin, error) {
	cfg := &cpb.PluginConfig{}
	var out []plugin.Plugin
	for _, mk := range []func(*cpb.PluginConfig) (filesystem.Extractor, error){
		dpkg.New, apk.New, rpm.New,
		gobinary.New, gomod.New,
		packagelockjson.New, packagejson.New,
		wheelegg.New, requirements.New,
		archive.New, pomxml.New,
		cargolock.New,
	} {
		e, err := mk(cfg)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Scan inventories target: a docker-save tarball, an OCI image layout directory, an unpacked
// root filesystem directory, or (when no such path exists) an image reference pulled from its
// registry.
func Scan(ctx context.Context, target string) (*Result, error) {
	plugins, err := extractors()
	if err != nil {
		return nil, err
	}
	cfg := &scalibr.ScanConfig{Plugins: plugins, Capabilities: &plugin.Capabilities{OS: plugin.OSLinux, Network: plugin.NetworkOffline, DirectFS: true, RunningSystem: false}}
	st, statErr := os.Stat(target)
	var (
		sr   *scalibr.ScanResult
		kind Kind
	)
	switch {
	case statErr == nil && st.IsDir() && isOCILayout(target):
		kind = KindOCILayout
		sr, err = scanOCILayout(ctx, target, cfg)
	case statErr == nil && st.IsDir():
		kind = KindRootFS
		abs, aerr := filepath.Abs(target)
		if aerr != nil {
			return nil, aerr
		}
		cfg.ScanRoots = []*scalibrfs.ScanRoot{scalibrfs.RealFSScanRoot(abs)}
		// A live system's pseudo-filesystems hold no packages and can be endless.
		for _, d := range []string{"proc", "sys", "dev"} {
			cfg.DirsToSkip = append(cfg.DirsToSkip, filepath.Join(abs, d))
		}
		sr = scalibr.New().Scan(ctx, cfg)
	case statErr == nil:
		kind = KindDockerArchive
		img, ierr := image.FromTarball(target, image.DefaultConfig())
		if ierr != nil {
			return nil, fmt.Errorf("%s: not a docker-save or OCI image tarball: %w", target, ierr)
		}
		defer img.CleanUp()
		sr, err = scalibr.New().ScanContainer(ctx, img, cfg)
	case errors.Is(statErr, os.ErrNotExist) && looksLikeRef(target):
		kind = KindRegistry
		sr, err = scanRemote(ctx, target, cfg)
		if err != nil {
			err = fmt.Errorf("no such file, and pulling it as an image reference failed: %w", err)
		}
	default:
		return nil, statErr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	if sr.Status != nil && sr.Status.Status == plugin.ScanStatusFailed {
		return nil, fmt.Errorf("%s: scan failed: %s", target, sr.Status.FailureReason)
	}
	return &Result{Target: target, Kind: kind, Packages: convert(sr.Inventory.Packages)}, nil
}

func isOCILayout(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "oci-layout"))
	return err == nil
}

// looksLikeRef tells an image reference from a mistyped path.
func looksLikeRef(s string) bool {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "/") {
		return false
	}
	for _, ext := range []string{".tar", ".tar.gz", ".tgz"} {
		if strings.HasSuffix(s, ext) {
			return false
		}
	}
	_, err := name.ParseReference(s)
	return err == nil
}

// scanOCILayout scans the layout's first image (the one an unqualified pull would run).
func scanOCILayout(ctx context.Context, dir string, cfg *scalibr.ScanConfig) (*scalibr.ScanResult, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) == 0 {
		return nil, errors.New("OCI layout holds no image")
	}
	v1img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("OCI layout: first manifest: %w", err)
	}
	return scanV1Image(ctx, v1img, cfg)
}

// scanV1Image unpacks an image's layers into scalibr's layered view and scans it.
func scanV1Image(ctx context.Context, v1img v1.Image, cfg *scalibr.ScanConfig) (*scalibr.ScanResult, error) {
	img, err := image.FromV1Image(v1img, image.DefaultConfig())
	if err != nil {
		return nil, err
	}
	defer img.CleanUp()
	return scalibr.New().ScanContainer(ctx, img, cfg)
}

func scanRemote(ctx context.Context, ref string, cfg *scalibr.ScanConfig) (*scalibr.ScanResult, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	v1img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	cfg.Capabilities.Network = plugin.NetworkOnline
	return scanV1Image(ctx, v1img, cfg)
}

// convert maps scalibr packages to rampart's, keeping only packages with an OSV ecosystem and a
// version (a package without either cannot be matched) and merging duplicates found in
// several files.
func convert(pkgs []*extractor.Package) []vuln.Installed {
	byKey := map[string]*vuln.Installed{}
	for _, p := range pkgs {
		eco := p.Ecosystem().String()
		if eco == "" || p.Version == "" || p.Name == "" {
			continue
		}
		in := vuln.Installed{Ecosystem: eco, Name: p.Name, Version: p.Version}
		if eco == "Go" && in.Name == "go" {
			in.Name = "stdlib" // the toolchain a binary was built with, as the Go vulndb names it
		}
		switch m := p.Metadata.(type) {
		case *dpkgmeta.Metadata:
			in.Source, in.SourceVersion = m.SourceName, m.SourceVersion
		case *apkmeta.Metadata:
			in.Source = m.OriginName
		}
		k := eco + "|" + in.Name + "|" + in.Version
		cur, ok := byKey[k]
		if !ok {
			cur = &in
			byKey[k] = cur
		}
		if loc := "/" + strings.TrimPrefix(p.Location.PathOrEmpty(), "/"); loc != "/" && !slices.Contains(cur.Location, loc) {
			cur.Location = append(cur.Location, loc)
		}
	}
	out := make([]vuln.Installed, 0, len(byKey))
	for _, v := range byKey {
		sort.Strings(v.Location)
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Ecosystem != b.Ecosystem {
			return a.Ecosystem < b.Ecosystem
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Version < b.Version
	})
	return out
}
