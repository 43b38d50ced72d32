package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
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

// TestCreateCommitAbort: a streamed File is invisible until Commit, an
// aborted one leaves nothing, and Abort after Commit keeps the file.
func TestCreateCommitAbort(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	os.WriteFile(path, []byte("old"), 0o644)

	f, err := Create(path, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("new!"), 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("before Commit the file holds %q, want old", b)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if b, _ := os.ReadFile(path); string(b) != "new!" {
		t.Errorf("after Commit the file holds %q", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode())
	}
	if err := f.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}

	g, err := Create(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("discarded"))
	g.Abort()
	if b, _ := os.ReadFile(path); string(b) != "new!" {
		t.Errorf("Abort changed the file: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries after Abort, want 1", len(ents))
	}
}

// TestCreateIn: the temp file follows the caller's pattern (here in
// another directory of the root), CommitNew never replaces, CommitUnder
// runs its function under the lock after the rename.
func TestCreateIn(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "tmp"), 0o755)
	os.Mkdir(filepath.Join(dir, "files"), 0o755)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	f, err := CreateIn(root, "files/a", "tmp/x-*.part", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Match("tmp/x-????????????.part", f.TempName()); !m {
		t.Errorf("temp name %q does not follow tmp/x-*.part", f.TempName())
	}
	f.Write([]byte("first"))
	if err := f.CommitNew(); err != nil {
		t.Fatal(err)
	}

	g, _ := CreateIn(root, "files/a", "tmp/*", 0o644)
	g.Write([]byte("second"))
	if err := g.CommitNew(); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CommitNew over an existing file: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "files/a")); string(b) != "first" {
		t.Errorf("CommitNew replaced the file: %q", b)
	}

	var mu sync.Mutex
	h, _ := CreateIn(root, "files/a", "tmp/*", 0o644)
	h.Write([]byte("third"))
	ran := false
	err = h.CommitUnder(&mu, func() {
		if mu.TryLock() {
			t.Error("then ran without the lock held")
		}
		b, _ := os.ReadFile(filepath.Join(dir, "files/a"))
		ran = string(b) == "third"
	})
	if err != nil || !ran {
		t.Errorf("CommitUnder: %v, then saw the new file: %v", err, ran)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ holds %d entries, want none", len(ents))
	}
	if _, err := CreateIn(root, "files/b", "tmp/none", 0o644); err == nil {
		t.Error("a pattern without * was taken")
	}
}
