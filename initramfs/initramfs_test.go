package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

const fakeDep = `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:

kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/lib/crc-t10dif.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/lib/crc-t10dif.ko.zst:
`

func TestParseDep(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		err      bool
	}{
		{"ok", fakeDep, false},
		{"no colon", "kernel/a.ko kernel/b.ko\n", true},
		{"absolute", "/lib/modules/a.ko:\n", true},
		{"climbs", "../a.ko:\n", true},
		{"dep climbs", "kernel/a.ko: kernel/../../b.ko\n", true},
		{"not a module", "kernel/a.txt:\n", true},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDep(strings.NewReader(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if err != nil && !errors.Is(err, ErrDepSyntax) {
				t.Fatalf("err = %v, not ErrDepSyntax", err)
			}
		})
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/lib/crc-t10dif.ko.zst": "crc_t10dif",
		"virtio_net.ko":                "virtio_net",
		"a/b/nvme-core.ko.xz":          "nvme_core",
		"virtio-net":                   "virtio_net",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	dt, err := ParseDep(strings.NewReader(fakeDep))
	if err != nil {
		t.Fatal(err)
	}
	res := dt.Resolve([]string{"virtio_net", "sd_mod", "af_packet", "e1000", "virtio"}, map[string]bool{"af_packet": true})
	want := []string{
		"kernel/net/core/failover.ko",
		"kernel/drivers/net/net_failover.ko",
		"kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/virtio/virtio.ko",
		"kernel/drivers/net/virtio_net.ko",
		"kernel/drivers/scsi/scsi_mod.ko",
		"kernel/lib/crc-t10dif.ko.zst",
		"kernel/drivers/scsi/sd_mod.ko",
	}
	if !reflect.DeepEqual(res.Files, want) {
		t.Errorf("Files =\n%q\nwant\n%q", res.Files, want)
	}
	if !reflect.DeepEqual(res.Builtin, []string{"af_packet"}) || !reflect.DeepEqual(res.Missing, []string{"e1000"}) {
		t.Errorf("Builtin %q Missing %q", res.Builtin, res.Missing)
	}
	// A cycle (a broken file) ends.
	dt, _ = ParseDep(strings.NewReader("a.ko: b.ko\nb.ko: a.ko\n"))
	if got := dt.Resolve([]string{"a"}, nil).Files; !reflect.DeepEqual(got, []string{"b.ko", "a.ko"}) {
		t.Errorf("cycle: %q", got)
	}
}

// FuzzParseDep: any input parses or fails cleanly, and what parses
// reads back the same when written out again.
func FuzzParseDep(f *testing.F) {
	f.Add(fakeDep)
	f.Add("a.ko:\n")
	f.Add("a.ko: a.ko\n")
	f.Add("x")
	f.Fuzz(func(t *testing.T, s string) {
		dt, err := ParseDep(strings.NewReader(s))
		if err != nil {
			return
		}
		var b strings.Builder
		for name, deps := range dt.Deps {
			b.WriteString(dt.Path[name] + ":")
			for _, d := range deps {
				b.WriteString(" " + dt.Path[d])
			}
			b.WriteString("\n")
		}
		dt2, err := ParseDep(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, b.String())
		}
		if !reflect.DeepEqual(dt.Deps, dt2.Deps) {
			t.Fatalf("deps differ:\n%v\n%v", dt.Deps, dt2.Deps)
		}
		var names []string
		for n := range dt.Path {
			names = append(names, n)
		}
		dt.Resolve(names, nil) // ends, whatever the graph
	})
}

var (
	staticOnce sync.Once
	staticBin  string
	staticErr  error
)

// static builds a small static binary (CGO_ENABLED=0) for /init.
func static(t *testing.T) string {
	t.Helper()
	staticOnce.Do(func() {
		dir, err := os.MkdirTemp("", "initramfs-test")
		if err != nil {
			staticErr = err
			return
		}
		src := filepath.Join(dir, "main.go")
		os.WriteFile(src, []byte("package main\nfunc main() { println(\"hello from init\") }\n"), 0o644)
		staticBin = filepath.Join(dir, "init")
		cmd := exec.Command("go", "build", "-o", staticBin, src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = errors.New(string(out))
		}
	})
	if staticErr != nil {
		t.Fatalf("building a static binary: %v", staticErr)
	}
	return staticBin
}

func TestCheckStatic(t *testing.T) {
	if err := CheckStatic(static(t)); err != nil {
		t.Errorf("static binary: %v", err)
	}
	if err := CheckStatic("/bin/ls"); !errors.Is(err, ErrDynamic) || !strings.Contains(err.Error(), "/bin/ls") {
		t.Errorf("/bin/ls: %v, want ErrDynamic naming it", err)
	}
	txt := filepath.Join(t.TempDir(), "script")
	os.WriteFile(txt, []byte("#!/bin/sh\n"), 0o755)
	if err := CheckStatic(txt); !errors.Is(err, ErrNotELF) {
		t.Errorf("script: %v, want ErrNotELF", err)
	}
	if err := Build(&bytes.Buffer{}, Options{Binary: "/bin/ls"}); !errors.Is(err, ErrDynamic) {
		t.Errorf("Build with /bin/ls: %v, want ErrDynamic", err)
	}
}

// fakeModules lays out a modules directory with fakeDep.
func fakeModules(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(fakeDep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/net/packet/af_packet.ko\n"), 0o644)
	dt, _ := ParseDep(strings.NewReader(fakeDep))
	for _, p := range dt.Path {
		f := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(f), 0o755)
		os.WriteFile(f, []byte("module "+p+strings.Repeat("x", len(p)%5)), 0o644)
	}
	return dir
}

// TestBuildCpio reads the archive back with GNU cpio: the entries, the
// console device's number, the files' contents and the module list.
func TestBuildCpio(t *testing.T) {
	cpio := testutil.Tool(t, "cpio")
	bin := static(t)
	mods := fakeModules(t)
	var buf bytes.Buffer
	var rep Report
	if err := Build(&buf, Options{Binary: bin, ModulesDir: mods, Modules: []string{"virtio_net", "sd_mod", "af_packet", "e1000"}, Report: &rep}); err != nil {
		t.Fatal(err)
	}
	if rep.Release != "6.1.0-test" || len(rep.Modules) != 8 || !reflect.DeepEqual(rep.Builtin, []string{"af_packet"}) || !reflect.DeepEqual(rep.Missing, []string{"e1000"}) {
		t.Errorf("report %+v", rep)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}

	list := exec.Command(cpio, "-tv", "--quiet")
	list.Stdin = bytes.NewReader(raw.Bytes())
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -tv: %v\n%s", err, out)
	}
	var console string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(l, " dev/console") {
			console = l
		}
	}
	if !strings.HasPrefix(console, "crw-------") || !strings.Contains(console, " 5,") || !strings.Contains(console, " 1 ") {
		t.Errorf("dev/console in cpio -tv: %q\n%s", console, out)
	}

	dst := t.TempDir()
	ext := exec.Command(cpio, "-id", "--quiet", "--no-absolute-filenames")
	ext.Dir = dst
	ext.Stdin = bytes.NewReader(raw.Bytes())
	if out, err := ext.CombinedOutput(); err != nil && os.Getuid() == 0 {
		t.Fatalf("cpio -i: %v\n%s", err, out) // as non-root, only mknod fails
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "etc", "mnt"} {
		if st, err := os.Stat(filepath.Join(dst, d)); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	want, _ := os.ReadFile(bin)
	got, err := os.ReadFile(filepath.Join(dst, "init"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("init differs from %s (%v)", bin, err)
	}
	if st, _ := os.Stat(filepath.Join(dst, "init")); st == nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init mode %v", st)
	}
	if out, err := exec.Command(filepath.Join(dst, "init")).CombinedOutput(); err != nil || !strings.Contains(string(out), "hello from init") {
		t.Errorf("running the extracted init: %v %q", err, out)
	}
	ml, err := os.ReadFile(filepath.Join(dst, ModuleList))
	if err != nil {
		t.Fatal(err)
	}
	var wantList string
	for _, m := range rep.Modules {
		wantList += "/lib/modules/6.1.0-test/" + m + "\n"
		a, _ := os.ReadFile(filepath.Join(mods, m))
		b, err := os.ReadFile(filepath.Join(dst, "lib/modules/6.1.0-test", m))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: %v", m, err)
		}
	}
	if string(ml) != wantList {
		t.Errorf("module list:\n%s\nwant\n%s", ml, wantList)
	}
	if !strings.HasPrefix(string(ml), "/lib/modules/6.1.0-test/kernel/net/core/failover.ko\n") {
		t.Errorf("failover (needed by net_failover and virtio_net) is not first:\n%s", ml)
	}
}

// TestResolveRunningKernel resolves the default list against this
// machine's kernel, when it has one: virtio_net comes after virtio_ring.
func TestResolveRunningKernel(t *testing.T) {
	dirs, _ := filepath.Glob("/lib/modules/*/modules.dep")
	if len(dirs) == 0 {
		t.Skip("no /lib/modules/*/modules.dep")
	}
	res, err := resolveDir(filepath.Dir(dirs[len(dirs)-1]), nil)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, f := range res.Files {
		pos[ModuleName(f)] = i + 1
	}
	if pos["virtio_net"] == 0 {
		t.Skipf("this kernel has no virtio_net module: %q", res.Missing)
	}
	if pos["virtio_ring"] != 0 && pos["virtio_ring"] > pos["virtio_net"] {
		t.Errorf("virtio_ring after virtio_net: %q", res.Files)
	}
	t.Logf("%d files; built in %q; missing %q", len(res.Files), res.Builtin, res.Missing)
}
