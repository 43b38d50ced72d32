package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoDisk: no whole disk fits.
var ErrNoDisk = errors.New("no disk")

// Disk is a whole disk from /sys/block.
type Disk struct {
	Name     string // vda, sda, nvme0n1
	Size     int64  // bytes
	ReadOnly bool
	// Removable: the kernel says the medium is removable (a USB stick,
	// a card reader). Never picked by itself: a stick left in a machine
	// must not receive the room's image because the internal disk is too
	// small. The task's disk can still name it.
	Removable bool
}

// skipDisk are /sys/block names that are not disks to image: loop
// devices, RAM disks, zram, CD-ROMs, floppies, device-mapper and md.
var skipDisk = []string{"loop", "ram", "zram", "sr", "fd", "dm-", "md"}

// Disks lists the whole disks under sysRoot/block in name order, with
// their sizes (the size file counts 512-byte sectors whatever the
// device's block size: include/linux/blkdev.h, SECTOR_SHIFT).
func Disks(sysRoot string) ([]Disk, error) {
	ents, err := os.ReadDir(filepath.Join(sysRoot, "block"))
	if err != nil {
		return nil, err
	}
	var out []Disk
next:
	for _, e := range ents {
		name := e.Name()
		for _, p := range skipDisk {
			if strings.HasPrefix(name, p) {
				continue next
			}
		}
		dir := filepath.Join(sysRoot, "block", name)
		b, err := os.ReadFile(filepath.Join(dir, "size"))
		if err != nil {
			continue
		}
		sectors, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || sectors <= 0 || sectors > 1<<54 {
			continue
		}
		ro, _ := os.ReadFile(filepath.Join(dir, "ro"))
		rm, _ := os.ReadFile(filepath.Join(dir, "removable"))
		out = append(out, Disk{Name: name, Size: sectors * 512, ReadOnly: strings.TrimSpace(string(ro)) == "1",
			Removable: strings.TrimSpace(string(rm)) == "1"})
	}
	return out, nil
}

// PickDisk returns the first writable, non-removable whole disk of at
// least need bytes;
// what is the image's name, for the error, which lists every disk seen.
func PickDisk(sysRoot string, need int64, what string) (Disk, error) {
	disks, err := Disks(sysRoot)
	if err != nil {
		return Disk{}, fmt.Errorf("%w for %s: %v", ErrNoDisk, what, err)
	}
	var seen []string
	for _, d := range disks {
		if !d.ReadOnly && !d.Removable && d.Size >= need {
			return d, nil
		}
		s := d.Name + " " + sizeString(d.Size)
		if d.ReadOnly {
			s += " read-only"
		}
		if d.Removable {
			s += " removable"
		}
		seen = append(seen, s)
	}
	if len(seen) == 0 {
		return Disk{}, fmt.Errorf("%w for %s (%s): none found in %s", ErrNoDisk, what, sizeString(need), filepath.Join(sysRoot, "block"))
	}
	return Disk{}, fmt.Errorf("%w large enough for %s (%s): %s", ErrNoDisk, what, sizeString(need), strings.Join(seen, ", "))
}

// sizeString is n in binary units, one decimal ("1.0 GiB", "64 MiB").
func sizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	u := "KMGTPE"[exp : exp+1]
	if v == float64(int64(v)) && v >= 10 {
		return fmt.Sprintf("%d %siB", int64(v), u)
	}
	return fmt.Sprintf("%.1f %siB", v, u)
}
