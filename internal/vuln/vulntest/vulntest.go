// Package vulntest builds test images for the vulnerability scanner: a root filesystem with a
// Debian dpkg database, Python distributions and a real Go binary whose build info names
// chosen module versions, written as a directory, a docker-save tarball or an OCI layout.
package vulntest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Deb is one installed Debian package.
type Deb struct{ Name, Source, Version string }

// GoModule is a module a Go binary is built against.
type GoModule struct{ Path, Version string }

// Image describes what a test image holds.
type Image struct {
	DebianVersion string // VERSION_ID in /etc/os-release, e.g. "12"
	Debs          []Deb
	Python        map[string]string // distribution name -> version, as dist-info directories
	GoModules     []GoModule        // modules linked into /usr/local/bin/app (needs the go tool)
	Files         map[string]string // any other files (path -> content): apk database, lockfiles
}

// WriteRootFS writes img's files under dir.
func WriteRootFS(dir string, img Image) error {
	files := map[string]string{}
	if img.DebianVersion != "" {
		files["etc/os-release"] = fmt.Sprintf("PRETTY_NAME=\"Debian GNU/Linux %[1]s\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"%[1]s\"\nID=debian\n", img.DebianVersion)
	}
	if len(img.Debs) > 0 {
		var b strings.Builder
		for _, d := range img.Debs {
			fmt.Fprintf(&b, "Package: %s\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n", d.Name)
			if d.Source != "" && d.Source != d.Name {
				fmt.Fprintf(&b, "Source: %s\n", d.Source)
			}
			fmt.Fprintf(&b, "Version: %s\nMaintainer: Test <test@example.org>\nDescription: test package %s\n\n", d.Version, d.Name)
		}
		files["var/lib/dpkg/status"] = b.String()
	}
	for dist, ver := range img.Python {
		files[fmt.Sprintf("usr/lib/python3/dist-packages/%s-%s.dist-info/METADATA", dist, ver)] =
			fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: test\n", dist, ver)
	}
	for p, body := range img.Files {
		files[p] = body
	}
	for p, body := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			return err
		}
	}
	if len(img.GoModules) > 0 {
		bin := filepath.Join(dir, "usr/local/bin/app")
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			return err
		}
		return BuildGoBinary(bin, img.GoModules)
	}
	return nil
}

// BuildGoBinary builds a real Go program that imports one package of each module, resolved
// from a file:// module proxy made here, so the binary's build info records exactly these
// module versions without network access. Module contents are stand-ins; the versions are real.
func BuildGoBinary(out string, mods []GoModule) error {
	work, err := os.MkdirTemp("", "rampart-gobin-")
	if err != nil {
		return err
	}
	defer func() {
		// The module cache is read-only unless built with -modcacherw; make sure it goes.
		_ = filepath.Walk(work, func(p string, _ os.FileInfo, _ error) error { os.Chmod(p, 0o755); return nil })
		os.RemoveAll(work)
	}()
	proxy := filepath.Join(work, "proxy")
	app := filepath.Join(work, "app")
	var req, imports, uses strings.Builder
	for i, m := range mods {
		if err := writeProxyModule(proxy, m); err != nil {
			return err
		}
		fmt.Fprintf(&req, "require %s %s\n", m.Path, m.Version)
		fmt.Fprintf(&imports, "\tm%d %q\n", i, m.Path+"/rampartstub")
		fmt.Fprintf(&uses, "\tprintln(m%d.Name())\n", i)
	}
	if err := os.MkdirAll(app, 0o755); err != nil {
		return err
	}
	gomod := "module example.com/app\n\ngo 1.21\n\n" + req.String()
	main := "package main\n\nimport (\n" + imports.String() + ")\n\nfunc main() {\n" + uses.String() + "}\n"
	if err := os.WriteFile(filepath.Join(app, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(app, "main.go"), []byte(main), 0o644); err != nil {
		return err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(gobin, "build", "-mod=mod", "-modcacherw", "-trimpath", "-o", out, ".")
	cmd.Dir = app
	cmd.Env = append(os.Environ(),
		"GOPROXY=file://"+proxy, "GOSUMDB=off", "GONOSUMDB=*", "GOFLAGS=", "GOWORK=off",
		"GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOMODCACHE="+filepath.Join(work, "modcache"))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the test Go binary: %v\n%s", err, b)
	}
	return nil
}

func writeProxyModule(proxy string, m GoModule) error {
	dir := filepath.Join(proxy, filepath.FromSlash(m.Path), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	mod := "module " + m.Path + "\n"
	stub := "package rampartstub\n\nfunc Name() string { return \"" + m.Path + "@" + m.Version + "\" }\n"
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for p, body := range map[string]string{"go.mod": mod, "rampartstub/stub.go": stub} {
		w, err := zw.Create(m.Path + "@" + m.Version + "/" + p)
		if err != nil {
			return err
		}
		io.WriteString(w, body)
	}
	if err := zw.Close(); err != nil {
		return err
	}
	for f, body := range map[string][]byte{
		m.Version + ".info": []byte(fmt.Sprintf(`{"Version":%q,"Time":"2021-01-01T00:00:00Z"}`, m.Version)),
		m.Version + ".mod":  []byte(mod),
		m.Version + ".zip":  zb.Bytes(),
		"list":              []byte(m.Version + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, f), body, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// V1Image makes a one-layer image of the root filesystem at dir.
func V1Image(dir string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	return mutate.ConfigFile(img, &v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(layer)}})
}

func mustDiffIDs(l v1.Layer) []v1.Hash {
	h, err := l.DiffID()
	if err != nil {
		return nil
	}
	return []v1.Hash{h}
}

// WriteDockerArchive writes the root filesystem at dir as a docker-save tarball tagged ref.
func WriteDockerArchive(out, ref, dir string) error {
	img, err := V1Image(dir)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, tag, img)
}

// WriteOCILayout writes the root filesystem at dir as an OCI image layout directory.
func WriteOCILayout(out, dir string) error {
	img, err := V1Image(dir)
	if err != nil {
		return err
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img)
}
