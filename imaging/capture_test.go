package imaging

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/image"
)

// disk writes a raw disk of 3 MiB with data, a hole and a repeated chunk.
func disk(t *testing.T) (string, []byte) {
	t.Helper()
	raw := make([]byte, 3<<20+4096)
	rand.Read(raw[:1<<20])
	copy(raw[2<<20:], raw[:1<<20])
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, raw
}

func capture(t *testing.T, url, token, src string) (string, error) {
	t.Helper()
	s, err := image.OpenSource(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, body, err := image.Capture(context.Background(), nil, s, url, token, image.Meta{Source: src}, image.CreateOptions{ChunkSize: 1 << 20})
	return body, err
}

func TestCapture(t *testing.T) {
	dir := t.TempDir()
	srv := &Server{Dir: dir, Prefix: "/images/", Token: "0123456789abcdef0123", Log: zerolog.New(zerolog.NewTestWriter(t))}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	src, raw := disk(t)

	// Refused without the token, with a wrong one, and with none set on
	// the server: nothing is written.
	for _, c := range []struct{ server, client string }{{srv.Token, ""}, {srv.Token, "wrong-token-wrong-token"}, {"", ""}} {
		srv.Token = c.server
		if _, err := capture(t, hs.URL+"/images/room.img", c.client, src); err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("token %q (server %q): %v, want 401", c.client, c.server, err)
		}
	}
	srv.Token = "0123456789abcdef0123"
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("refused captures left %d files", len(ents))
	}
	for _, name := range []string{"../x.img", ".hidden", "a/b.img"} {
		if _, err := capture(t, hs.URL+"/images/"+name, srv.Token, src); err == nil {
			t.Fatalf("name %q accepted", name)
		}
	}

	// Accepted: the image is there, verifies, and decodes to the disk.
	body, err := capture(t, hs.URL+"/images/room.img", srv.Token, src)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `"name":"room.img"`) {
		t.Fatalf("answer %q", body)
	}
	got := decodeAll(t, filepath.Join(dir, "room.img"))
	if !bytes.Equal(got, raw) {
		t.Fatal("captured image does not decode to the disk")
	}
	good, _ := os.ReadFile(filepath.Join(dir, "room.img"))

	// A corrupted stream (one byte of a chunk flipped on the way) is
	// refused, and the good image stays.
	var stream bytes.Buffer
	s, _ := image.OpenSource(context.Background(), src)
	sw, _ := image.NewStreamWriter(&stream, s.Size(), 1<<20, image.Meta{})
	if err := image.Create(context.Background(), s, sw, image.CreateOptions{ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	sw.Finish()
	s.Close()
	b := stream.Bytes()
	b[len(b)/3] ^= 0x40
	req, _ := http.NewRequest(http.MethodPut, hs.URL+"/images/room.img", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("corrupt stream: %s, want 400", resp.Status)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "room.img")); !bytes.Equal(now, good) {
		t.Fatal("a corrupt capture replaced the good image")
	}
	// Over the size cap: 413, nothing left behind.
	srv.MaxImageSize = 64 << 10
	if _, err := capture(t, hs.URL+"/images/big.img", srv.Token, src); err == nil || !strings.Contains(err.Error(), "413") {
		t.Fatalf("over the cap: %v, want 413", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("%d files in the imaging dir, want only room.img", len(ents))
	}
}

// TestSweep: temp files of captures cut short are removed at start, and
// nothing else.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, tempPrefix+"room.img-123"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "room.img"), []byte("x"), 0o644)
	if err := (&Server{Dir: dir}).Sweep(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "room.img" {
		t.Fatalf("after the sweep: %v", ents)
	}
}

func decodeAll(t *testing.T, path string) []byte {
	t.Helper()
	f, ix, err := image.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, ix.Header.RawSize)
	for i, e := range ix.Entries {
		off, n := ix.RawSpan(i)
		if e.Kind == image.KindHole {
			continue
		}
		stored := make([]byte, e.Len)
		if _, err := f.ReadAt(stored, int64(e.Offset)); err != nil {
			t.Fatal(err)
		}
		b, err := d.Decode(ix, i, stored, nil)
		if err != nil {
			t.Fatal(err)
		}
		copy(out[off:off+int64(n)], b)
	}
	return out
}
