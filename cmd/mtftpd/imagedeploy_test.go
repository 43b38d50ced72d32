package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtftpd/mtftpd/image"
)

// imagingServer runs `mtftpd serve` on loopback with root/images as the
// imaging dir (captures allowed with token) and waits until it serves.
func imagingServer(t *testing.T, root, token string) (tftpAddr, httpURL string) {
	t.Helper()
	os.MkdirAll(filepath.Join(root, "images"), 0o755)
	os.WriteFile(filepath.Join(root, "ready"), []byte("ok"), 0o644)
	tftpAddr, httpAddr := freePort(t), freeTCPPort(t)
	cfg := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[tftp]
listen = %q
root = %q
[http]
listen = %q
[mtftp]
enabled = false
[imaging]
dir = %q
upload_token = %q
`, tftpAddr, root, httpAddr, filepath.Join(root, "images"), token)), 0o644)
	logs := new(syncBuffer)
	srv := exec.Command(bin, "serve", "--config", cfg)
	srv.Stderr, srv.Stdout = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	waitServing(t, tftpAddr, "ready", filepath.Join(t.TempDir(), "ready"), logs)
	return tftpAddr, "http://" + httpAddr
}

// TestImageDeployCLI: with the real binaries on loopback (multicast off,
// so unicast): a capture is refused without the token and, with it,
// followed by a deploy gives the disk byte for byte, by HTTP and by TFTP;
// bad input — an image the server lacks, a truncated image, a flipped
// byte in a chunk, a foreign file, a disk too small — each gets its own
// error, and writes nothing the deploy could not stand behind.
func TestImageDeployCLI(t *testing.T) {
	root, work := t.TempDir(), t.TempDir()
	const token = "a-token-of-20-chars!"
	tftpAddr, httpURL := imagingServer(t, root, token)
	raw := make([]byte, 6<<20+12345)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2 << 20 {
		raw[i] = byte(r.Uint32())
	}
	copy(raw[4<<20:], bytes.Repeat([]byte("mtftpd deploys images "), 40000))
	disk := filepath.Join(work, "golden.raw")
	os.WriteFile(disk, raw, 0o644)

	// Capture: refused without the right token, then taken.
	if out, code := mtftpd(t, "image", "capture", "--token", "not-the-token-at-all", disk, httpURL+"/images/golden.img"); code == 0 || !strings.Contains(out, "401") {
		t.Fatalf("capture with a wrong token: exit %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "images", "golden.img")); err == nil {
		t.Fatal("a refused capture left an image")
	}
	tokFile := filepath.Join(work, "token")
	os.WriteFile(tokFile, []byte(token+"\n"), 0o600)
	if out, code := mtftpd(t, "image", "capture", "--token-file", tokFile, disk, httpURL+"/images/golden.img"); code != 0 {
		t.Fatalf("capture: exit %d: %s", code, out)
	}
	for _, via := range [][]string{{"--unicast", "--http", httpURL}, {"--unicast"}} {
		target := filepath.Join(work, "target-"+fmt.Sprint(len(via)))
		out, code := mtftpd(t, append(append([]string{"image", "deploy", "--verify"}, via...), tftpAddr, "images/golden.img", target)...)
		if code != 0 {
			t.Fatalf("deploy %v: exit %d: %s", via, code, out)
		}
		if got, _ := os.ReadFile(target); !bytes.Equal(got, raw) {
			t.Fatalf("deploy %v: the disk differs from the captured one (%d bytes)", via, len(got))
		}
	}

	img, _ := os.ReadFile(filepath.Join(root, "images", "golden.img"))
	put := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(root, "images", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("truncated.img", img[:len(img)-1000])
	ix, err := image.ReadIndex(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(img)
	e := ix.Entries[0] // random bytes: stored as they are, 1 MiB
	flipped[e.Offset+uint64(e.Len)/2] ^= 1
	put("flipped.img", flipped)
	foreign, _ := os.ReadFile(bin)
	put("foreign.img", foreign[:1<<20])

	for _, c := range []struct {
		name, image, disk string
		want              string
		untouched         bool // the disk is not even created
	}{
		{"not on the server", "images/nope.img", "", "image not found on the server", true},
		{"truncated", "images/truncated.img", "", "truncated", true},
		{"flipped byte", "images/flipped.img", "", "SHA-256", false},
		{"foreign file", "images/foreign.img", "", "not an mtftpd image", true},
	} {
		for _, via := range [][]string{{"--unicast", "--http", httpURL}, {"--unicast"}} {
			target := filepath.Join(work, strings.ReplaceAll(c.name, " ", "-")+fmt.Sprint(len(via)))
			out, code := mtftpd(t, append(append([]string{"image", "deploy"}, via...), tftpAddr, c.image, target)...)
			if code == 0 || !strings.Contains(out, c.want) {
				t.Errorf("%s %v: exit %d, want an error saying %q: %s", c.name, via, code, c.want, out)
			}
			if _, err := os.Stat(target); c.untouched && err == nil {
				t.Errorf("%s %v: the disk was created", c.name, via)
			}
			if c.name == "flipped byte" {
				// Other chunks may be written; the bad one never is.
				got, _ := os.ReadFile(target)
				if len(got) >= 1<<20 && bytes.Equal(got[:1<<20], raw[:1<<20]) || !strings.Contains(out, "chunk 0") {
					t.Errorf("%s: the chunk that failed its digest was written, or not named: %s", c.name, out)
				}
			}
		}
	}
	// A block device would be checked for its size; a file too small is
	// grown, but a disk that cannot be (a directory here) is refused.
	out, code := mtftpd(t, "image", "deploy", "--unicast", tftpAddr, "images/golden.img", work)
	if code == 0 || !strings.Contains(out, "not a block device or a regular file") {
		t.Errorf("a directory as the disk: exit %d: %s", code, out)
	}
}
