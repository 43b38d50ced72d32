package filestore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// newStore makes a root directory inside a fresh temp dir (so tests can put
// files just outside the root) and opens a Store on it.
func newStore(t *testing.T) (root string, s *Store) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return root, s
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile swaps in new contents the way deploy tools do: write a temp
// file, rename it over the old name (a new inode).
func replaceFile(t testing.TB, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Error(err)
		return
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Error(err)
	}
}

func mustGet(t testing.TB, s *Store, name string) *File {
	t.Helper()
	f, err := s.Get(name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return f
}

func checkStats(t *testing.T, s *Store, want Stats) {
	t.Helper()
	if got := s.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestGetShared(t *testing.T) {
	root, s := newStore(t)
	content := []byte("PXELINUX image, pretend\n")
	writeFile(t, filepath.Join(root, "pxelinux.0"), content)
	fi, err := os.Stat(filepath.Join(root, "pxelinux.0"))
	if err != nil {
		t.Fatal(err)
	}

	// Firmware spelling and Windows spelling of the same file.
	a := mustGet(t, s, "/pxelinux.0")
	b := mustGet(t, s, `\pxelinux.0`)
	if !bytes.Equal(a.Data(), content) || !bytes.Equal(b.Data(), content) {
		t.Fatalf("Data = %q / %q, want %q", a.Data(), b.Data(), content)
	}
	if unsafe.SliceData(a.Data()) != unsafe.SliceData(b.Data()) {
		t.Error("two Gets of an unchanged file got different mappings")
	}
	if a.Name() != "pxelinux.0" || a.Size() != int64(len(content)) || !a.ModTime().Equal(fi.ModTime()) {
		t.Errorf("Name, Size, ModTime = %q, %d, %v; want %q, %d, %v",
			a.Name(), a.Size(), a.ModTime(), "pxelinux.0", len(content), fi.ModTime())
	}
	if n, err := a.NetasciiSize(); err != nil || n != int64(len(content))+1 {
		t.Errorf("NetasciiSize = %d, %v; want %d", n, err, len(content)+1)
	}
	checkStats(t, s, Stats{Opens: 2, Hits: 1, Maps: 1, Live: 1})

	a.Release()
	if a.Data() != nil {
		t.Error("Data after Release is not nil")
	}
	if !bytes.Equal(b.Data(), content) {
		t.Error("releasing one handle disturbed the other")
	}
	a.Release() // double Release: documented no-op
	checkStats(t, s, Stats{Opens: 2, Hits: 1, Maps: 1, Live: 1})
	b.Release()
	checkStats(t, s, Stats{Opens: 2, Hits: 1, Maps: 1, Unmaps: 1, Live: 0})

	// Nothing live: the next Get maps again.
	c := mustGet(t, s, "pxelinux.0")
	c.Release()
	checkStats(t, s, Stats{Opens: 3, Hits: 1, Maps: 2, Unmaps: 2, Live: 0})
}

func TestGetReplaced(t *testing.T) {
	root, s := newStore(t)
	name := filepath.Join(root, "vmlinuz")
	v1, v2 := []byte("kernel version 1"), []byte("kernel version 2") // same size: only the inode differs
	writeFile(t, name, v1)

	old := mustGet(t, s, "vmlinuz")
	replaceFile(t, name, v2)
	cur := mustGet(t, s, "vmlinuz")
	if !bytes.Equal(cur.Data(), v2) {
		t.Errorf("Get after replace read %q, want %q", cur.Data(), v2)
	}
	if !bytes.Equal(old.Data(), v1) {
		t.Errorf("old handle now reads %q, want %q", old.Data(), v1)
	}
	again := mustGet(t, s, "vmlinuz")
	if unsafe.SliceData(again.Data()) != unsafe.SliceData(cur.Data()) {
		t.Error("a Get of the current version did not share its mapping")
	}
	checkStats(t, s, Stats{Opens: 3, Hits: 1, Maps: 2, Live: 2})

	old.Release()
	checkStats(t, s, Stats{Opens: 3, Hits: 1, Maps: 2, Unmaps: 1, Live: 1})
	if !bytes.Equal(cur.Data(), v2) {
		t.Error("releasing the old version disturbed the new one")
	}
	cur.Release()
	again.Release()
	checkStats(t, s, Stats{Opens: 3, Hits: 1, Maps: 2, Unmaps: 2, Live: 0})
}

// Appending keeps the inode but changes size (and mtime): a new version.
func TestGetGrownInPlace(t *testing.T) {
	root, s := newStore(t)
	name := filepath.Join(root, "initrd.img")
	writeFile(t, name, []byte("first"))
	old := mustGet(t, s, "initrd.img")
	defer old.Release()

	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(" and more"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	cur := mustGet(t, s, "initrd.img")
	defer cur.Release()
	if string(cur.Data()) != "first and more" || cur.Size() != 14 {
		t.Errorf("new handle: %q size %d, want %q size 14", cur.Data(), cur.Size(), "first and more")
	}
	if old.Size() != 5 || string(old.Data()) != "first" {
		t.Errorf("old handle: %q size %d, want %q size 5", old.Data(), old.Size(), "first")
	}
	if got := s.Stats(); got.Maps != 2 || got.Hits != 0 {
		t.Errorf("Stats = %+v, want Maps 2 Hits 0", got)
	}
}

func TestGetEmptyFile(t *testing.T) {
	root, s := newStore(t)
	writeFile(t, filepath.Join(root, "empty"), nil)
	f := mustGet(t, s, "empty")
	if f.Size() != 0 || f.Data() != nil {
		t.Errorf("empty file: Size %d, Data %v; want 0, nil", f.Size(), f.Data())
	}
	if n, err := f.NetasciiSize(); n != 0 || err != nil {
		t.Errorf("NetasciiSize = %d, %v; want 0, nil", n, err)
	}
	if f.Truncated() {
		t.Error("empty file reported truncated")
	}
	f.Release()
	checkStats(t, s, Stats{Opens: 1, Maps: 1, Unmaps: 1})
}

func TestGetSymlinks(t *testing.T) {
	root, s := newStore(t)
	outside := filepath.Join(filepath.Dir(root), "outside")
	writeFile(t, outside, []byte("secret"))
	writeFile(t, filepath.Join(root, "sub", "file"), []byte("inside"))

	links := map[string]string{
		"alias":      "sub/file",
		"dirlink":    "sub",
		"up":         "sub/../sub/file", // ".." in a link target that stays inside is followed
		"passwd":     "/etc/passwd",
		"abs-inside": filepath.Join(root, "sub", "file"), // absolute: refused even pointing inside
		"escape":     "../outside",
		"escdir":     "..",
		"loop":       "loop",
		"dangling":   "sub/nothing",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Skipf("cannot create symlinks here: %v", err)
		}
	}

	for _, name := range []string{"alias", "dirlink/file", "up"} {
		f, err := s.Get(name)
		if err != nil {
			t.Errorf("Get(%q) through an inside symlink: %v", name, err)
			continue
		}
		if string(f.Data()) != "inside" {
			t.Errorf("Get(%q) read %q", name, f.Data())
		}
		f.Release()
	}

	for name, want := range map[string]error{
		"passwd":         ErrAccess,
		"abs-inside":     ErrAccess,
		"escape":         ErrAccess,
		"escdir/outside": ErrAccess,
		"loop":           ErrAccess,
		"dangling":       ErrNotFound,
	} {
		f, err := s.Get(name)
		if err == nil {
			f.Release()
			t.Errorf("Get(%q) succeeded (read %q), want %v", name, f.Data(), want)
			continue
		}
		checkErr(t, name, err, name, want)
	}
}

// checkErr asserts err is a *fs.PathError for path that wraps want and no
// other sentinel.
func checkErr(t *testing.T, name string, err error, path string, want error) {
	t.Helper()
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != path {
		t.Errorf("Get(%.40q) error %v: want a PathError for %q", name, err, path)
	}
	for _, sentinel := range []error{ErrNotFound, ErrAccess, ErrBadName} {
		if got := errors.Is(err, sentinel); got != (sentinel == want) {
			t.Errorf("Get(%.40q) error %v: errors.Is(%v) = %v", name, err, sentinel, got)
		}
	}
}

func TestGetErrors(t *testing.T) {
	root, s := newStore(t)
	writeFile(t, filepath.Join(root, "pxelinux.0"), []byte("x"))
	if err := os.Mkdir(filepath.Join(root, "pxelinux.cfg"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(filepath.Dir(root), "x"), []byte("outside"))

	longElem := strings.Repeat("a", 300) // fits MaxNameLen, exceeds NAME_MAX
	tests := []struct {
		name, path string
		want       error
	}{
		{"missing", "missing", ErrNotFound},
		{"/pxelinux.cfg/01-aa-bb", "pxelinux.cfg/01-aa-bb", ErrNotFound},
		{"pxelinux.0/x", "pxelinux.0/x", ErrNotFound}, // file used as a directory
		{"pxelinux.cfg", "pxelinux.cfg", ErrAccess},   // directory
		{"/pxelinux.cfg/", "pxelinux.cfg", ErrAccess},
		{"../x", `"../x"`, ErrAccess},
		{`..\x`, `"..\\x"`, ErrAccess},
		{"a\x00b", `"a\x00b"`, ErrBadName},
		{"", `""`, ErrBadName},
		{"/", `"/"`, ErrBadName},
		{longElem, longElem, ErrBadName},
	}
	for _, tt := range tests {
		f, err := s.Get(tt.name)
		if err == nil {
			f.Release()
			t.Errorf("Get(%.40q) succeeded, want %v", tt.name, tt.want)
			continue
		}
		checkErr(t, tt.name, err, tt.path, tt.want)
	}
	checkStats(t, s, Stats{})
}

func TestCloseKeepsMappings(t *testing.T) {
	root, s := newStore(t)
	writeFile(t, filepath.Join(root, "f"), []byte("still here"))
	f := mustGet(t, s, "f")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Get("f"); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Get after Close: %v, want fs.ErrClosed", err)
	}
	if string(f.Data()) != "still here" {
		t.Errorf("after Close read %q", f.Data())
	}
	f.Release()
	checkStats(t, s, Stats{Opens: 1, Maps: 1, Unmaps: 1})
}

// Many transfers at once on a stable file and on a file being replaced
// under them: every handle must see one whole version, and everything must
// be unmapped at the end.
func TestConcurrentGetRelease(t *testing.T) {
	root, s := newStore(t)
	version := func(v int) []byte { return bytes.Repeat([]byte{byte(v)}, 4096+v) }
	writeFile(t, filepath.Join(root, "same"), []byte("stable contents"))
	writeFile(t, filepath.Join(root, "replaced"), version(0))

	// Held for the whole run, so every Get of "same" must share it.
	pin := mustGet(t, s, "same")

	const workers, rounds, versions = 16, 200, 50
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for v := 1; v < versions; v++ {
			select {
			case <-stop:
				return
			default:
			}
			replaceFile(t, filepath.Join(root, "replaced"), version(v))
		}
	})
	var getsMu sync.Mutex
	gets := 0
	var workersWG sync.WaitGroup
	for w := range workers {
		workersWG.Go(func() {
			for i := range rounds {
				name := "same"
				if (w+i)%2 == 0 {
					name = "replaced"
				}
				f, err := s.Get(name)
				if err != nil {
					t.Errorf("Get(%q): %v", name, err)
					return
				}
				d := f.Data()
				if name == "same" {
					if string(d) != "stable contents" {
						t.Errorf("same read %q", d)
					}
				} else if len(d) < 4096 || len(d) != 4096+int(d[0]) || bytes.Count(d, d[:1]) != len(d) || int64(len(d)) != f.Size() {
					t.Errorf("replaced: torn read: %d bytes, Size %d", len(d), f.Size())
				}
				f.Release()
				f.Release() // racing double release must stay harmless
				getsMu.Lock()
				gets++
				getsMu.Unlock()
			}
		})
	}
	workersWG.Wait()
	close(stop)
	wg.Wait()

	sameGets := 0
	for w := range workers {
		for i := range rounds {
			if (w+i)%2 != 0 {
				sameGets++
			}
		}
	}
	pin.Release()
	st := s.Stats()
	if st.Live != 0 || st.Maps != st.Unmaps || st.Opens != int64(gets)+1 {
		t.Errorf("after the run: %+v; want Live 0, Maps == Unmaps, Opens %d", st, gets+1)
	}
	if st.Hits < int64(sameGets) {
		t.Errorf("Hits %d < %d Gets of the pinned file", st.Hits, sameGets)
	}
}

// TestReadMappedAllocs: senders call ReadMapped per block; it must not
// allocate when nothing faults.
func TestReadMappedAllocs(t *testing.T) {
	src, dst := make([]byte, 512), make([]byte, 512)
	if n := testing.AllocsPerRun(100, func() {
		ReadMapped(func() { copy(dst, src) })
	}); n != 0 {
		t.Errorf("ReadMapped allocates %v times per call, want 0", n)
	}
}

// With KeepIdle, a released mapping stays for the next Get of the same
// version (no new mmap, the same pages), at most n of them, least
// recently released out first, each until its time is up; a changed file
// gets a new mapping; Close unmaps the idle ones.
func TestKeepIdle(t *testing.T) {
	root, s := newStore(t)
	s.KeepIdle(2, 200*time.Millisecond)
	for _, n := range []string{"a", "b", "c"} {
		writeFile(t, filepath.Join(root, n), []byte("file "+n))
	}
	a := mustGet(t, s, "a")
	pa := unsafe.SliceData(a.Data())
	a.Release()
	checkStats(t, s, Stats{Opens: 1, Maps: 1, Live: 1, Idle: 1})
	a = mustGet(t, s, "a")
	if unsafe.SliceData(a.Data()) != pa {
		t.Error("a Get after Release mapped the file again")
	}
	checkStats(t, s, Stats{Opens: 2, Hits: 1, Maps: 1, Live: 1})
	a.Release()

	// Three idle, cap 2: a (the least recently released) goes.
	b, c := mustGet(t, s, "b"), mustGet(t, s, "c")
	b.Release()
	c.Release()
	checkStats(t, s, Stats{Opens: 4, Hits: 1, Maps: 3, Unmaps: 1, Live: 2, Idle: 2})

	// A changed file is a new version: a new mapping beside the idle one.
	writeFile(t, filepath.Join(root, "b"), []byte("file b, longer now"))
	b = mustGet(t, s, "b")
	if string(b.Data()) != "file b, longer now" {
		t.Fatalf("b = %q after it changed", b.Data())
	}
	b.Release() // idle: c, old b, new b → c goes
	checkStats(t, s, Stats{Opens: 5, Hits: 1, Maps: 4, Unmaps: 2, Live: 2, Idle: 2})

	// Their time runs out (polled: the timer fires on its own).
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Idle > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	checkStats(t, s, Stats{Opens: 5, Hits: 1, Maps: 4, Unmaps: 4, Live: 0})

	// Close unmaps what is idle; a handle released after Close unmaps.
	a, b = mustGet(t, s, "a"), mustGet(t, s, "b")
	a.Release()
	s.Close()
	checkStats(t, s, Stats{Opens: 7, Hits: 1, Maps: 6, Unmaps: 5, Live: 1})
	b.Release()
	checkStats(t, s, Stats{Opens: 7, Hits: 1, Maps: 6, Unmaps: 6, Live: 0})
}
