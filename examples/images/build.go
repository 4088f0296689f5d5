//go:build ignore

// Builds the example application's images as docker-save tarballs, with package versions that
// the test advisories in internal/vuln/testdata/osv know (some vulnerable, some fixed), so the
// demo can show findings ranked by exposure. Usage: go run examples/images/build.go OUTDIR
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/rampart-sec/rampart/internal/vuln/vulntest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run examples/images/build.go OUTDIR")
		os.Exit(2)
	}
	out := os.Args[1]
	glibcOld := vulntest.Deb{Name: "libc6", Source: "glibc", Version: "2.36-9+deb12u1"}
	glibcNew := vulntest.Deb{Name: "libc6", Source: "glibc", Version: "2.36-9+deb12u3"}
	sslOld := vulntest.Deb{Name: "libssl3", Source: "openssl", Version: "3.0.11-1~deb12u1"}
	sslNew := vulntest.Deb{Name: "libssl3", Source: "openssl", Version: "3.0.11-1~deb12u2"}
	images := map[string]vulntest.Image{
		"web":        {DebianVersion: "12", Debs: []vulntest.Deb{glibcOld, sslOld}, GoModules: []vulntest.GoModule{{Path: "golang.org/x/net", Version: "v0.6.0"}}},
		"api":        {DebianVersion: "12", Debs: []vulntest.Deb{glibcNew, sslNew}, Python: map[string]string{"requests": "2.25.0"}},
		"postgres":   {DebianVersion: "12", Debs: []vulntest.Deb{glibcOld, sslNew}},
		"coredns":    {GoModules: []vulntest.GoModule{{Path: "golang.org/x/text", Version: "v0.3.7"}}},
		"prometheus": {GoModules: []vulntest.GoModule{{Path: "golang.org/x/text", Version: "v0.3.8"}}},
	}
	for name, img := range images {
		root, err := os.MkdirTemp("", "rampart-image-")
		if err != nil {
			fail(err)
		}
		if err := vulntest.WriteRootFS(root, img); err != nil {
			fail(err)
		}
		ref := "registry.example/" + name + ":1.0"
		if err := vulntest.WriteDockerArchive(filepath.Join(out, name+".tar"), ref, root); err != nil {
			fail(err)
		}
		os.RemoveAll(root)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}
