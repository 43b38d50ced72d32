// Package initramfs builds the deploy environment's initrd: a gzip'd newc
// cpio archive whose /init is a static binary (mtftpd itself, which runs
// the imaging agent as PID 1), the directories and /dev/console the
// kernel and the agent need, and the kernel modules for the NICs and disk
// controllers, listed in load order in /etc/mtftpd-modules
// (docs/imaging.md, "The deploy environment").
//
// It never writes anything but the archive: it reads the binary and the
// modules directory, and it refuses a dynamically linked /init, which
// could not start in an initramfs without its loader and libraries.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ModuleList is where the archive lists the module files to load, one
// absolute path a line, dependencies first; the agent reads it.
const ModuleList = "etc/mtftpd-modules"

// Options says what goes into the archive.
type Options struct {
	// Binary is the file that becomes /init; "" = os.Executable().
	Binary string
	// ModulesDir is the kernel's modules directory
	// (/lib/modules/6.1.0-57-amd64); "" = no modules.
	ModulesDir string
	// Modules are the module names wanted; nil = DefaultModules.
	Modules []string
	// Report, if set, receives what was resolved.
	Report *Report
}

// Report says what Build put in.
type Report struct {
	Binary  string
	Release string   // the modules directory's base name (the kernel release)
	Modules []string // files copied, relative to ModulesDir, in load order
	Builtin []string // wanted modules built into the kernel
	Missing []string // wanted modules this kernel does not have
	Bytes   int64    // uncompressed bytes of the files
}

// ErrDynamic: the binary for /init needs a dynamic loader.
var ErrDynamic = errors.New("initramfs: binary is dynamically linked")

// ErrNotELF: the binary for /init is not an ELF executable.
var ErrNotELF = errors.New("initramfs: binary is not an ELF executable")

// CheckStatic refuses a file that is not an ELF executable or that has a
// PT_INTERP program header (it names a dynamic loader the initramfs does
// not have).
func CheckStatic(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotELF, file, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%w: %s is an ELF %v", ErrNotELF, file, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(io.LimitReader(p.Open(), 4096))
			return fmt.Errorf("%w: %s needs the loader %s; build it with CGO_ENABLED=0 (make build does)",
				ErrDynamic, file, strings.TrimRight(string(interp), "\x00"))
		}
	}
	return nil
}

// Build writes the archive to w.
func Build(w io.Writer, opts Options) error {
	bin := opts.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("initramfs: the running binary: %w", err)
		}
		bin = exe
	}
	if err := CheckStatic(bin); err != nil {
		return err
	}
	rep := opts.Report
	if rep == nil {
		rep = &Report{}
	}
	*rep = Report{Binary: bin}

	var files []string
	if opts.ModulesDir != "" {
		res, err := resolveDir(opts.ModulesDir, opts.Modules)
		if err != nil {
			return err
		}
		files = res.Files
		rep.Release = filepath.Base(filepath.Clean(opts.ModulesDir))
		rep.Modules, rep.Builtin, rep.Missing = res.Files, res.Builtin, res.Missing
	}

	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	c := &newcWriter{w: zw}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "etc", "mnt", "lib", "lib/modules"} {
		c.write(entry{name: d, mode: modeDir | 0o755})
	}
	// The kernel opens /dev/console for init's stdin, stdout and stderr
	// before devtmpfs is mounted (init/main.c, console_on_rootfs); 5:1 is
	// its number in Documentation/admin-guide/devices.txt.
	c.write(entry{name: "dev/console", mode: modeChar | 0o600, rmaj: 5, rmin: 1})
	if err := addFile(c, "init", bin, 0o755, rep); err != nil {
		return err
	}
	var list bytes.Buffer
	if len(files) > 0 {
		base := "lib/modules/" + rep.Release
		made := map[string]bool{"lib": true, "lib/modules": true}
		mkdirs := func(p string) {
			var parts []string
			for d := path.Dir(p); d != "." && !made[d]; d = path.Dir(d) {
				parts = append(parts, d)
			}
			for i := len(parts) - 1; i >= 0; i-- {
				made[parts[i]] = true
				c.write(entry{name: parts[i], mode: modeDir | 0o755})
			}
		}
		for _, f := range files {
			name := base + "/" + f
			mkdirs(name)
			if err := addFile(c, name, filepath.Join(opts.ModulesDir, filepath.FromSlash(f)), 0o644, rep); err != nil {
				return err
			}
			list.WriteString("/" + name + "\n")
		}
	}
	c.write(entry{name: ModuleList, mode: modeReg | 0o644, data: list.Bytes()})
	if err := c.close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return zw.Close()
}

// addFile copies the regular file src into the archive as name.
func addFile(c *newcWriter, name, src string, perm uint32, rep *Report) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initramfs: %s is not a regular file (%v)", src, st.Mode().Type())
	}
	rep.Bytes += st.Size()
	if err := c.write(entry{name: name, mode: modeReg | perm, r: f, size: st.Size()}); err != nil {
		return fmt.Errorf("initramfs: %s: %w", src, err)
	}
	return nil
}

// resolveDir reads modules.dep and modules.builtin of a modules directory
// and resolves the wanted names.
func resolveDir(dir string, want []string) (Resolution, error) {
	if want == nil {
		want = DefaultModules
	}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return Resolution{}, fmt.Errorf("initramfs: %w (is %s a kernel's modules directory? depmod writes modules.dep)", err, dir)
	}
	defer f.Close()
	t, err := ParseDep(f)
	if err != nil {
		return Resolution{}, fmt.Errorf("%s: %w", f.Name(), err)
	}
	builtin := map[string]bool{}
	if b, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		builtin, err = ParseBuiltin(b)
		b.Close()
		if err != nil {
			return Resolution{}, fmt.Errorf("initramfs: %s: %w", b.Name(), err)
		}
	}
	return t.Resolve(want, builtin), nil
}
