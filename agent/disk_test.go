package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeSys lays out sysRoot/block/<name>/{size,ro}; size in bytes.
func fakeSys(t *testing.T, disks map[string]int64, ro ...string) string {
	t.Helper()
	root := t.TempDir()
	for name, size := range disks {
		dir := filepath.Join(root, "block", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "size"), []byte(strconv.FormatInt(size/512, 10)+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "ro"), []byte("0\n"), 0o644)
	}
	for _, name := range ro {
		os.WriteFile(filepath.Join(root, "block", name, "ro"), []byte("1\n"), 0o644)
	}
	return root
}

func TestPickDisk(t *testing.T) {
	const MiB = 1 << 20
	sys := fakeSys(t, map[string]int64{
		"loop0": 8192 * MiB, "ram0": 8192 * MiB, "zram0": 8192 * MiB, "sr0": 8192 * MiB, "fd0": 8192 * MiB,
		"dm-0": 8192 * MiB, "md0": 8192 * MiB,
		"sda": 64 * MiB, "sdb": 4096 * MiB, "sdc": 8192 * MiB, "sdd": 16384 * MiB, "nvme0n1": 0,
	}, "sdb")
	// sdd is a USB stick: the largest disk, and never picked by itself.
	os.WriteFile(filepath.Join(sys, "block", "sdd", "removable"), []byte("1\n"), 0o644)
	for _, tc := range []struct {
		need int64
		want string
		err  string
	}{
		{need: 1, want: "sda"},
		{need: 64 * MiB, want: "sda"},
		{need: 64*MiB + 1, want: "sdc"},
		{need: 8193 * MiB, err: "no disk large enough for room.img (8.0 GiB): sda 64 MiB, sdb 4.0 GiB read-only, sdc 8.0 GiB, sdd 16 GiB removable"},
	} {
		d, err := PickDisk(sys, tc.need, "room.img")
		if tc.err != "" {
			if err == nil || err.Error() != tc.err || !errors.Is(err, ErrNoDisk) {
				t.Errorf("need %d: err %v, want %q", tc.need, err, tc.err)
			}
			continue
		}
		if err != nil || d.Name != tc.want {
			t.Errorf("need %d: %+v %v, want %s", tc.need, d, err, tc.want)
		}
	}
	if _, err := PickDisk(t.TempDir(), 1, "x"); !errors.Is(err, ErrNoDisk) {
		t.Errorf("no block dir: %v", err)
	}
	if _, err := PickDisk(fakeSys(t, map[string]int64{"loop0": MiB}), 1, "x"); err == nil || !strings.Contains(err.Error(), "no disk for x (1 B): none found in ") {
		t.Errorf("only a loop device: %v", err)
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int64]string{1: "1 B", 1 << 30: "1.0 GiB", 64 << 20: "64 MiB", 1536: "1.5 KiB", 10 << 40: "10 TiB"} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}
