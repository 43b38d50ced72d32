package tftp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/tftp"
)

// fakeVirtual renders "host.cfg" for the asking client and knows two
// failing names; everything else is not its file.
type fakeVirtual struct{ calls atomic.Int64 }

func (v *fakeVirtual) Render(name string, client netip.AddrPort, local netip.Addr) ([]byte, bool, error) {
	v.calls.Add(1)
	switch name {
	case "host.cfg":
		return fmt.Appendf(nil, "client %s\nlocal %s\n", client.Addr(), local), true, nil
	case "unknown-host.cfg":
		return nil, true, fmt.Errorf("no such host: %w", filestore.ErrNotFound)
	case "broken.cfg":
		return nil, true, errors.New(`template: broken.cfg:3: function "nope" not defined`)
	}
	return nil, false, nil
}

// TestVirtualFiles: a virtual file is rendered per request and served in
// octet and netascii mode; its errors become TFTP errors; names it does not
// claim come from the root as before.
func TestVirtualFiles(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "plain.txt"), []byte("from disk\n"), 0o644)
	os.WriteFile(filepath.Join(root, "host.cfg"), []byte("the template must win"), 0o644)
	v := &fakeVirtual{}
	srv := startServer(t, root, func(s *tftp.Server) { s.Virtual = v })
	get := func(c *tftp.Client, name string) (string, error) {
		var buf bytes.Buffer
		_, err := c.Get(context.Background(), srv.Addr, name, &buf)
		return buf.String(), err
	}
	want := "client 127.0.0.1\nlocal 127.0.0.1\n"
	for _, c := range []*tftp.Client{{}, {TSize: true, BlockSize: 8}, {Mode: "netascii", TSize: true}} {
		if got, err := get(c, "host.cfg"); err != nil || got != want {
			t.Errorf("%+v: host.cfg = %q, %v; want %q", c, got, err, want)
		}
	}
	if got, err := get(&tftp.Client{}, "plain.txt"); err != nil || got != "from disk\n" {
		t.Errorf("plain.txt = %q, %v", got, err)
	}
	var re *tftp.RemoteError
	if _, err := get(&tftp.Client{}, "unknown-host.cfg"); !errors.As(err, &re) || re.Code != tftp.ErrCodeNotFound {
		t.Errorf("unknown-host.cfg: %v, want file not found", err)
	}
	if _, err := get(&tftp.Client{}, "broken.cfg"); !errors.As(err, &re) || re.Code != tftp.ErrCodeAccess {
		t.Errorf("broken.cfg: %v, want access violation", err)
	}
	if n := v.calls.Load(); n != 6 {
		t.Errorf("Virtual.Render called %d times for 6 requests", n)
	}
	if srv.Counters.NotFound.Load() != 1 || srv.Counters.Denied.Load() != 1 {
		t.Errorf("counters: not found %d, denied %d", srv.Counters.NotFound.Load(), srv.Counters.Denied.Load())
	}
}
