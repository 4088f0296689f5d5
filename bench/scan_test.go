package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/vuln"
	"github.com/rampart-sec/rampart/internal/vuln/inventory"
	"github.com/rampart-sec/rampart/internal/vuln/vulntest"
)

// vulndbVersion pins the Go vulnerability database the scan benchmark imports (about 4,800
// real advisories), fetched through the Go module proxy.
const vulndbVersion = "golang.org/x/vulndb@v0.0.0-20261105234957-e22db6528018"

// TestBenchScan measures `rampart scan image` on a docker-save tarball of about 700 packages
// (640 Debian packages, 40 Python distributions and a Go binary with 20 modules) against a warm
// database: the Go vulnerability database plus two Debian advisories per Debian package.
// Baseline in the same run: inventory alone (reading the image), so the ratio shows what
// matching adds. Medians of 7 runs go to bench/results/scan.json. Target: under 1 s.
func TestBenchScan(t *testing.T) {
	if os.Getenv("RAMPART_BENCH") == "" {
		t.Skip("set RAMPART_BENCH=1 (make bench) to run the scan benchmark")
	}
	work := t.TempDir()
	img := vulntest.Image{DebianVersion: "12", Python: map[string]string{}}
	advisories := filepath.Join(work, "osv")
	if err := os.MkdirAll(filepath.Join(advisories, "debian"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 640; i++ {
		name := fmt.Sprintf("pkg%03d", i)
		img.Debs = append(img.Debs, vulntest.Deb{Name: "lib" + name, Source: name, Version: fmt.Sprintf("1.%d-2+deb12u1", i%7)})
		for j, fixed := range []string{"1.3-1", "1.5-2+deb12u2"} {
			adv := fmt.Sprintf(`{"id":"DSA-%d-%d","modified":"2025-01-01T00:00:00Z","aliases":["CVE-2025-%d"],"severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}],"affected":[{"package":{"ecosystem":"Debian:12","name":%q},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":%q}]}]}]}`, 9000+i, j+1, 10000+2*i+j, name, fixed)
			if err := os.WriteFile(filepath.Join(advisories, "debian", fmt.Sprintf("DSA-%d-%d.json", 9000+i, j+1)), []byte(adv), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < 40; i++ {
		img.Python[fmt.Sprintf("pydist%02d", i)] = fmt.Sprintf("2.%d.0", i)
	}
	for _, m := range []string{"golang.org/x/text", "golang.org/x/net", "golang.org/x/crypto", "golang.org/x/sys", "golang.org/x/oauth2",
		"google.golang.org/grpc", "google.golang.org/protobuf", "github.com/gin-gonic/gin", "github.com/gorilla/websocket", "github.com/dgrijalva/jwt-go",
		"github.com/docker/docker", "github.com/containerd/containerd", "github.com/opencontainers/runc", "k8s.io/apimachinery", "k8s.io/client-go",
		"github.com/prometheus/client_golang", "github.com/hashicorp/consul/api", "github.com/coreos/etcd", "github.com/miekg/dns", "github.com/go-yaml/yaml"} {
		img.GoModules = append(img.GoModules, vulntest.GoModule{Path: m, Version: "v0.1.0"})
	}
	if dir, err := goModDir(vulndbVersion); err == nil {
		advisories = advisories + string(os.PathListSeparator) + filepath.Join(dir, "data", "osv")
	} else {
		t.Logf("Go vulnerability database unavailable (%v): Debian advisories only", err)
	}
	root := filepath.Join(work, "root")
	if err := vulntest.WriteRootFS(root, img); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(work, "image.tar")
	if err := vulntest.WriteDockerArchive(tarball, "bench/app:1", root); err != nil {
		t.Fatal(err)
	}
	dbDir := filepath.Join(work, "db")
	start := time.Now()
	info, err := vuln.Import(dbDir, filepath.SplitList(advisories), vuln.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	importTime := time.Since(start)

	ctx := context.Background()
	var invTimes, scanTimes []time.Duration
	var packages, findings int
	for i := 0; i < 7; i++ {
		start = time.Now()
		if _, err := inventory.Scan(ctx, tarball); err != nil {
			t.Fatal(err)
		}
		invTimes = append(invTimes, time.Since(start))

		// The full scan opens the warm database as the CLI does, inventories and matches.
		start = time.Now()
		db, err := vuln.Open(dbDir)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := inventory.Scan(ctx, tarball)
		if err != nil {
			t.Fatal(err)
		}
		vs, err := db.Match(inv.Packages)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		scanTimes = append(scanTimes, time.Since(start))
		packages, findings = len(inv.Packages), len(vs)
	}
	inv, scan := median(invTimes), median(scanTimes)
	res := map[string]any{
		"packages":            packages,
		"findings":            findings,
		"advisories":          info.Advisories,
		"import_ms":           ms(importTime),
		"inventory_ms_median": ms(inv),
		"scan_ms_median":      ms(scan),
		"scan_vs_inventory":   float64(scan) / float64(inv),
		"target_ms":           1000,
		"runs":                len(scanTimes),
	}
	t.Logf("%d packages, %d advisories: inventory %v, scan %v (%.2fx inventory), %d findings; import %v",
		packages, info.Advisories, inv, scan, float64(scan)/float64(inv), findings, importTime)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile("results/scan.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if packages < 690 {
		t.Errorf("image holds %d packages, want about 700", packages)
	}
	if scan > time.Second {
		t.Errorf("scan took %v, target under 1 s", scan)
	}
}

func goModDir(modVersion string) (string, error) {
	out, err := exec.Command("go", "mod", "download", "-json", modVersion).Output()
	if err != nil {
		return "", err
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", modVersion, strings.TrimSpace(m.Error))
	}
	return m.Dir, nil
}

// median is the middle value (the upper one of an even count), leaving v as it is.
func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
