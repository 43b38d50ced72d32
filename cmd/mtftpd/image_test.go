package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageCommands runs image create, info, verify on a sparse raw disk
// with the real binary, then damages one chunk and checks verify names it.
func TestImageCommands(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	const chunk = 64 << 10
	raw := make([]byte, 40*chunk+123)
	copy(raw[510:], []byte{0x55, 0xAA})
	for i := 3 * chunk; i < 6*chunk; i++ {
		raw[i] = byte(i * 7 / 3)
	}
	copy(raw[20*chunk:], bytes.Repeat([]byte("some text "), 1000))
	copy(raw[30*chunk:], raw[3*chunk:4*chunk]) // a duplicate of chunk 3
	if err := os.WriteFile(disk, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "disk.img")

	out, code := mtftpd(t, "image", "create", "--chunk-size", "65536", disk, "-o", img)
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, out)
	}
	var digests [][32]byte
	for i := 0; i < len(raw); i += chunk {
		digests = append(digests, sha256.Sum256(raw[i:min(len(raw), i+chunk)]))
	}
	h := sha256.New()
	for _, d := range digests {
		h.Write(d[:])
	}
	imageDigest := hex.EncodeToString(h.Sum(nil))
	for _, want := range []string{img + ": raw 2.5 MiB", "41 chunks", "35 holes", "1 dedup'd", "image digest " + imageDigest} {
		if !strings.Contains(out, want) {
			t.Errorf("create output %q lacks %q", out, want)
		}
	}
	if m, _ := filepath.Glob(img + ".tmp-*"); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}

	out, code = mtftpd(t, "image", "info", "--json", img)
	if code != 0 {
		t.Fatalf("info: exit %d: %s", code, out)
	}
	var info imageInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("info --json: %v: %s", err, out)
	}
	fi, _ := os.Stat(img)
	if info.RawSize != uint64(len(raw)) || info.ChunkSize != chunk || info.Chunks != 41 || info.Holes != 35 || info.Dedup != 1 ||
		info.PartitionTable != "dos" || info.Source != disk || !strings.HasPrefix(info.Tool, "mtftpd ") ||
		info.ImageDigest != imageDigest || info.FileSize != fi.Size() || info.Created.IsZero() {
		t.Errorf("info %+v", info)
	}
	out, code = mtftpd(t, "image", "info", img)
	if code != 0 || !strings.Contains(out, "partition table: dos") || !strings.Contains(out, "image digest:    "+imageDigest) {
		t.Errorf("info: exit %d: %s", code, out)
	}

	out, code = mtftpd(t, "image", "verify", img)
	if code != 0 || !strings.Contains(out, "ok, 41 chunks") {
		t.Fatalf("verify: exit %d: %s", code, out)
	}

	// Damage chunk 20 (the text): verify must fail and name it.
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	e := 4096 + 20*48
	off, n := binary.BigEndian.Uint64(b[e:]), binary.BigEndian.Uint32(b[e+8:])
	b[off+uint64(n)/2] ^= 0xFF
	bad := filepath.Join(dir, "bad.img")
	os.WriteFile(bad, b, 0o644)
	out, code = mtftpd(t, "image", "verify", bad)
	if code != 1 || !strings.Contains(out, "chunk 20 (raw offset 1310720)") {
		t.Errorf("verify of a damaged image: exit %d: %s", code, out)
	}

	// Bad usage and bad input fail with a message and leave nothing behind.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"image", "create", "--chunk-size", "1000", disk, "-o", img + "2"}, "chunk size 1000"},
		{[]string{"image", "create", disk}, "need SRC and -o IMAGE"},
		{[]string{"image", "create", filepath.Join(dir, "missing"), "-o", img + "2"}, "missing"},
		{[]string{"image", "create", disk, "-o", filepath.Join(dir, "no", "dir.img")}, "no such file or directory"},
		{[]string{"image", "info", disk}, "not an mtftpd image"},
		{[]string{"image", "verify", disk}, "not an mtftpd image"},
		{[]string{"image", "bogus"}, `unknown subcommand "bogus"`},
		{[]string{"image", "deploy"}, "need SERVER IMAGE DISK"},
	} {
		out, code := mtftpd(t, tc.args...)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d: %s (want %q)", tc.args, code, out, tc.want)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.img2*")); len(m) != 0 {
		t.Errorf("files left: %v", m)
	}
}
