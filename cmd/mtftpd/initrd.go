package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/mtftpd/mtftpd/initramfs"
	"github.com/mtftpd/mtftpd/internal/atomicfile"
)

const initrdAbout = `Builds the deploy environment's initrd: /init is this mtftpd binary (static:
build it with CGO_ENABLED=0, as make build does), which runs the imaging agent
as PID 1; the kernel modules for NICs and disks come from DIR, which must be
the modules of the kernel the machines boot with it.`

func runImageInitrd(args []string) error {
	fs := newFlags("image initrd")
	out := fs.StringP("output", "o", "", "archive to write, e.g. deploy.cpio.gz (required; written as a temp file and renamed when complete)")
	modDir := fs.String("kernel-modules", "", `the deploy kernel's modules directory; "" = the newest in /lib/modules; "none" = no modules`)
	mods := fs.String("modules", strings.Join(initramfs.DefaultModules, ","), "modules to include (with what they need), comma-separated")
	bin := fs.String("binary", "", "static binary for /init; default: this mtftpd")
	pos, help, err := parseFlags(fs, args)
	if help || err != nil {
		return err
	}
	if *out == "" || len(pos) != 0 {
		fs.Usage()
		return errors.New("need -o FILE and no other arguments")
	}
	dir := *modDir
	switch dir {
	case "":
		d, err := newestModules("/lib/modules")
		if err != nil {
			return err
		}
		dir = d
	case "none":
		dir = ""
	}
	var want []string
	for _, m := range strings.Split(*mods, ",") {
		if m = strings.TrimSpace(m); m != "" {
			want = append(want, m)
		}
	}
	var rep initramfs.Report
	opts := initramfs.Options{Binary: *bin, ModulesDir: dir, Modules: want, Report: &rep}
	if want == nil {
		opts.Modules = []string{}
	}
	tmp, err := atomicfile.Create(*out, 0o644)
	if err != nil {
		return err
	}
	defer tmp.Abort()
	if err := initramfs.Build(tmp, opts); err != nil {
		return err
	}
	st, err := tmp.Stat()
	if err != nil {
		return err
	}
	if err := tmp.Commit(); err != nil {
		return err
	}
	fmt.Printf("%s: %s (%s uncompressed), /init = %s\n", *out, sizeString(st.Size()), sizeString(rep.Bytes), rep.Binary)
	if dir == "" {
		fmt.Println("modules: none (the kernel must have its NIC and disk drivers built in)")
		return nil
	}
	names := make([]string, len(rep.Modules))
	for i, m := range rep.Modules {
		names[i] = initramfs.ModuleName(m)
	}
	fmt.Printf("kernel %s: %d modules in load order: %s\n", rep.Release, len(names), strings.Join(names, " "))
	if len(rep.Builtin) > 0 {
		fmt.Printf("built in: %s\n", strings.Join(rep.Builtin, " "))
	}
	if len(rep.Missing) > 0 {
		fmt.Printf("skipped (not in this kernel): %s\n", strings.Join(rep.Missing, " "))
	}
	return nil
}

// newestModules picks the modules directory of the highest kernel release
// under root (by version order: 6.10 after 6.9).
func newestModules(root string) (string, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return "", fmt.Errorf("--kernel-modules: %w", err)
	}
	var rel []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(root, e.Name(), "modules.dep")); err == nil {
			rel = append(rel, e.Name())
		}
	}
	if len(rel) == 0 {
		return "", fmt.Errorf("--kernel-modules: no kernel's modules (modules.dep) under %s; install the deploy kernel's package (Debian: linux-image-amd64) or name the directory", root)
	}
	sort.Slice(rel, func(i, j int) bool { return kernelLess(rel[i], rel[j]) })
	return filepath.Join(root, rel[len(rel)-1]), nil
}

// kernelLess orders kernel releases by their numbers
// ("6.1.0-57-amd64" < "6.10.0-1-amd64"), then as text.
func kernelLess(a, b string) bool {
	na, nb := kernelNums(a), kernelNums(b)
	for i := 0; i < len(na) && i < len(nb); i++ {
		if na[i] != nb[i] {
			return na[i] < nb[i]
		}
	}
	if len(na) != len(nb) {
		return len(na) < len(nb)
	}
	return a < b
}

func kernelNums(r string) []int {
	var out []int
	for _, f := range strings.FieldsFunc(r, func(c rune) bool { return c < '0' || c > '9' }) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}
