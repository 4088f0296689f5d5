package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/source/store"
)

// TestThreatFile: an agent whose source has no ThreatDefense takes it from --threat-config's
// file, follows its changes, and keeps the one in force when the file stops decoding.
func TestThreatFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "td.yaml")
	write := func(body string) {
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("apiVersion: rampart.io/v1alpha1\nkind: ThreatDefense\nmetadata: {name: first}\nspec:\n  detectors:\n    portScan: {action: alert}\n")
	src := store.New(cluster())
	a, _, _ := start(t, src, &fakePlane{}, Config{ThreatFile: file})
	wait := func(what string, ok func(ThreatStatus) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second) // the file is looked at every few seconds
		for !ok(a.Status().Threat) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %+v", what, a.Status().Threat)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("first file", func(s ThreatStatus) bool { return s.Config == "first" && s.Error == "" })
	second := "apiVersion: rampart.io/v1alpha1\nkind: ThreatDefense\nmetadata: {name: second}\nspec:\n  detectors:\n    portScan: {action: alert}\n"
	write(second)
	// Asked to look now (SIGHUP), the agent takes it long before its next poll; the status
	// names the content in force by its hash.
	asked := time.Now()
	a.ReloadThreatFile()
	wait("changed file", func(s ThreatStatus) bool { return s.Config == "second" && s.File == fileSum([]byte(second)) })
	if took := time.Since(asked); took > threatFilePoll {
		t.Errorf("took %v after ReloadThreatFile", took)
	}
	// Asked again with the file unchanged, the agent loads it as a new generation (which
	// reloads every feed), once.
	prev := a.Status().Threat
	gen := prev.Generation
	a.ReloadThreatFile()
	wait("reloaded file", func(s ThreatStatus) bool { return s.Generation > gen })
	if s := a.Status().Threat; s.Generation != gen+1 || s.Config != "second" || s.File != fileSum([]byte(second)) || !s.Loaded.After(prev.Loaded) {
		t.Fatalf("after a reload of generation %d: %+v", gen, s)
	}
	// Any change to the document is a new generation, an annotation too (re-applying an
	// unchanged ConfigMap changes nothing on the node).
	annotated := strings.Replace(second, "{name: second}", "{name: second, annotations: {reload: \"1\"}}", 1)
	write(annotated)
	wait("annotated file", func(s ThreatStatus) bool { return s.File == fileSum([]byte(annotated)) && s.Generation == gen+2 })
	write("apiVersion: rampart.io/v1alpha1\nkind: ThreatDefense\nmetadata: {name: third}\nspec:\n  detectors:\n    portScan: {action: nope}\n")
	wait("bad file", func(s ThreatStatus) bool {
		return s.Config == "second" && strings.Contains(s.Error, "spec.detectors.portScan.action") && s.File == fileSum([]byte(annotated))
	})
	// The ConfigMap deleted: the file goes, and with it the ThreatDefense (no error).
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	wait("no file", func(s ThreatStatus) bool { return s.Config == "" && s.Error == "" })
}
