package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestNewestModules(t *testing.T) {
	root := t.TempDir()
	for _, r := range []string{"6.9.0-1-amd64", "6.10.0-1-amd64", "6.1.0-57-amd64", "7.0.0-1-amd64-nodep"} {
		os.MkdirAll(filepath.Join(root, r), 0o755)
		if r != "7.0.0-1-amd64-nodep" {
			os.WriteFile(filepath.Join(root, r, "modules.dep"), nil, 0o644)
		}
	}
	got, err := newestModules(root)
	if err != nil || filepath.Base(got) != "6.10.0-1-amd64" {
		t.Fatalf("newestModules = %q, %v; want 6.10.0-1-amd64 (7.0.0 has no modules.dep)", got, err)
	}
	if _, err := newestModules(t.TempDir()); err == nil {
		t.Fatal("empty root: no error")
	}
}
