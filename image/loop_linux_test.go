package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needRoot skips a test that needs root (loop devices, mount) when not root.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mount")
	}
}

// needTools fails (as root, where make test installs them) when a tool is
// missing: the Debian packages are in scripts/test-deps.sh.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (Debian: util-linux, mount, fdisk, e2fsprogs; scripts/test-deps.sh installs them): %v", tool, err)
		}
	}
}

// makeSparse creates a sparse file of size bytes in a temp dir.
func makeSparse(t testing.TB, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// losetup attaches file to a free loop device and detaches it at cleanup.
// With parts, the partitions the file's table describes get their devices
// (/dev/loopNpM): losetup -P asks the kernel to scan, and partx -a adds
// them where the kernel has no parser for the table type.
func losetup(t testing.TB, file string, parts int) string {
	t.Helper()
	needTools(t, "losetup", "partx")
	args := []string{"-f", "--show"}
	if parts > 0 {
		args = append(args, "-P")
	}
	dev := strings.TrimSpace(string(run(t, "losetup", append(args, file)...)))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
		}
	})
	if parts > 0 {
		waitPartitions(t, dev, parts)
	}
	return dev
}

// waitPartitions makes sure the kernel has devices for the first parts
// partitions of dev (/dev/loopNpM), adding them with partx -a where it did
// not scan the table itself, and removes them at cleanup.
func waitPartitions(t testing.TB, dev string, parts int) {
	t.Helper()
	t.Cleanup(func() { exec.Command("partx", "-d", dev).Run() })
	if _, err := os.Stat(dev + "p1"); err != nil {
		exec.Command("partx", "-a", dev).Run() // fails harmlessly for partitions the kernel already added
	}
	for i := 1; i <= parts; i++ {
		p := fmt.Sprintf("%sp%d", dev, i)
		for try := 0; ; try++ {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if try == 100 {
				t.Fatalf("%s did not appear after partx -a", p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// mount mounts dev (with mount's extra args) on a new temp dir and
// unmounts it at cleanup.
func mount(t testing.TB, dev string, args ...string) string {
	t.Helper()
	needTools(t, "mount", "umount")
	dir := t.TempDir()
	run(t, "mount", append(args, dev, dir)...)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// partitionFile writes a one-partition table (label "dos" or "gpt") into
// file, the partition starting at 1 MiB and filling the rest.
func partitionFile(t testing.TB, file, label string) {
	t.Helper()
	needTools(t, "sfdisk")
	cmd := exec.Command("sfdisk", "-q", file)
	cmd.Stdin = strings.NewReader("label: " + label + "\nstart=2048, type=L\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk %s: %v\n%s", file, err, out)
	}
}
