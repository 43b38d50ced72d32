package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s[1].json") // glob metacharacters in the name
	for _, content := range []string{"first", "second"} {
		if err := Write(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("file holds %q, want %q", b, content)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v: want 0600", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(ents))
	}
	if err := Write(filepath.Join(dir, "missing", "x.json"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	torn := path + TempInfix + "123"
	os.WriteFile(torn, []byte("torn"), 0o600)
	if got := RemoveTemps(path); len(got) != 1 || got[0] != torn {
		t.Errorf("RemoveTemps = %v, want [%s]", got, torn)
	}
	if b, _ := os.ReadFile(path); string(b) != "second" {
		t.Errorf("RemoveTemps touched the file: %q", b)
	}
}
