package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadPathsAndErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
	write("sub/deeper/c.json", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}`)
	write("sub/notes.txt", "ignored")
	objs, err := Load([]string{dir, "-"}, LoadOptions{Stdin: strings.NewReader("apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n")})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 4 {
		t.Fatalf("loaded %d objects, want 4", len(objs))
	}

	write("bad/x.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
	write("bad/y.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}\n")
	_, err = Load([]string{dir}, LoadOptions{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"defined again", "y.yaml (document 1): Pod default/Bad_Name: metadata.name", "y.yaml (document 2): Service default/s: spec.ports[0].port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := Load([]string{filepath.Join(dir, "missing")}, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing path: %v", err)
	}
}

func TestClusterDeleteNamespaceCascades(t *testing.T) {
	objs, err := decodeString("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ab}\n")
	if err != nil {
		t.Fatal(err)
	}
	c := FromObjects(objs)
	if err := c.Delete("ns", "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Pods["a/p"]; ok {
		t.Error("pod in deleted namespace remains")
	}
	if _, ok := c.Pods["ab/p"]; !ok {
		t.Error("pod in another namespace was deleted")
	}
	if err := c.Delete("pod", "a/p"); err == nil {
		t.Error("deleting a missing pod succeeded")
	}
}
