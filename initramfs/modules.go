package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"unicode"
)

// DefaultModules are the drivers a deploy environment loads when they are
// modules of its kernel: the common NICs (virtio, Intel, Realtek,
// Broadcom), the common disk controllers (virtio, NVMe, AHCI, PIIX) and
// the SCSI disk driver, af_packet, which the DHCP client's raw socket
// needs (Debian builds it in), and virtio_rng: a virtual machine whose CPU
// has no RDRAND (QEMU's TCG default CPU) gets its first random numbers
// from it instead of waiting minutes (the DHCP client's transaction ID
// blocks on them).
var DefaultModules = []string{
	"virtio_net", "virtio_pci", "e1000", "e1000e", "igb", "igc", "ixgbe", "r8169", "tg3", "bnxt_en",
	"virtio_blk", "virtio_scsi", "nvme", "ahci", "ata_piix", "sd_mod", "af_packet", "virtio_rng",
}

// ErrDepSyntax: a line of modules.dep is not "path: dep dep ...".
var ErrDepSyntax = errors.New("initramfs: modules.dep syntax")

// Limits on modules.dep: a real one (Debian 12, 6.1) has ~4,000 lines of
// at most a few hundred bytes and at most a few dozen dependencies each.
const (
	maxDepLine    = 64 << 10
	maxDepModules = 100000
)

// ModuleName is the name modprobe knows a module file by: its base name
// without .ko and a compression suffix, with '-' read as '_'
// (kmod's modname_normalize).
func ModuleName(file string) string {
	b := path.Base(file)
	for _, s := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, s)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// DepTable is modules.dep: each module's file (relative to the modules
// directory) and the files it needs, by module name.
type DepTable struct {
	Path map[string]string   // name -> relative path
	Deps map[string][]string // name -> names of the modules it needs
}

// ParseDep reads modules.dep ("kernel/x/a.ko: kernel/y/b.ko kernel/z/c.ko"
// per line, as depmod writes it). Blank lines are skipped; anything else
// without a colon, or with a path that is absolute or climbs out of the
// modules directory, is an error naming the line.
func ParseDep(r io.Reader) (*DepTable, error) {
	t := &DepTable{Path: map[string]string{}, Deps: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxDepLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if len(t.Path) >= maxDepModules {
			return nil, fmt.Errorf("%w: more than %d modules", ErrDepSyntax, maxDepModules)
		}
		mod, deps, ok := strings.Cut(line, ":")
		mod = strings.TrimSpace(mod)
		if !ok || !validModPath(mod) {
			return nil, fmt.Errorf("%w: line %d: %.80q", ErrDepSyntax, n, line)
		}
		name := ModuleName(mod)
		t.Path[name] = mod
		var names []string
		for _, d := range strings.Fields(deps) {
			if !validModPath(d) {
				return nil, fmt.Errorf("%w: line %d: dependency %.80q", ErrDepSyntax, n, d)
			}
			names = append(names, ModuleName(d))
			if _, seen := t.Path[ModuleName(d)]; !seen {
				t.Path[ModuleName(d)] = d // its own line normally follows; until then this is its path
			}
		}
		t.Deps[name] = names
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrDepSyntax, n+1, err)
	}
	return t, nil
}

// validModPath accepts a relative, clean path to a module file, without
// white space or ':' (modules.dep separates paths with them: such a path
// could not be written back as a dependency; a fuzz finding).
func validModPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") ||
		strings.ContainsFunc(p, func(r rune) bool { return r == ':' || unicode.IsSpace(r) }) {
		return false
	}
	for _, s := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(p, s) {
			return true
		}
	}
	return false
}

// ParseBuiltin reads modules.builtin (one path per line) into a set of
// module names.
func ParseBuiltin(r io.Reader) (map[string]bool, error) {
	set := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxDepLine)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			set[ModuleName(l)] = true
		}
	}
	return set, sc.Err()
}

// Resolution is what Resolve made of a list of wanted modules.
type Resolution struct {
	Files   []string // relative paths, in load order: every module after the ones it needs
	Builtin []string // wanted names built into the kernel (nothing to load)
	Missing []string // wanted names this kernel has neither as a module nor built in
}

// Resolve finds the wanted modules and, transitively, what they need, in
// an order insmod can follow. A dependency cycle (depmod refuses them, so
// only a broken file has one) is cut where it closes.
func (t *DepTable) Resolve(want []string, builtin map[string]bool) Resolution {
	var res Resolution
	done := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		if done[name] {
			return
		}
		done[name] = true // before the dependencies: a cycle ends here
		for _, d := range t.Deps[name] {
			visit(d)
		}
		res.Files = append(res.Files, t.Path[name])
	}
	for _, w := range want {
		name := ModuleName(w)
		switch {
		case t.Path[name] != "":
			visit(name)
		case builtin[name]:
			res.Builtin = append(res.Builtin, name)
		default:
			res.Missing = append(res.Missing, name)
		}
	}
	return res
}
