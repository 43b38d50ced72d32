package mirror

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// fakeDecider hands mac1 the deploy environment and records its calls.
type fakeDecider struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeDecider) Decide(mac net.HardwareAddr, host string, known bool, httpBase string, local netip.Addr) Imaging {
	f.mu.Lock()
	f.calls = append(f.calls, mac.String()+" "+host+" "+httpBase+" "+local.String())
	f.mu.Unlock()
	if mac.String() != mac1.String() {
		return Imaging{Action: "local"}
	}
	return Imaging{Action: "deploy", Task: "room", Kernel: "deploy/vmlinuz", Initrd: "deploy/deploy.cpio.gz",
		Cmdline: "mtftpd.http=" + httpBase + " mtftpd.server=" + local.String() + ":69 mtftpd.token=t", State: "booting"}
}

// TestImagingTemplates renders the example's iPXE script (HTTP) and
// pxelinux config (TFTP) for a machine with a task and one without.
func TestImagingTemplates(t *testing.T) {
	dec := &fakeDecider{}
	tm := &Templates{Dir: "../examples/reimage-room/templates", Log: zerolog.New(zerolog.NewTestWriter(t)), HTTPPort: 8080,
		Hosts: []Host{{MAC: mac1, Hostname: "pc01", IP: netip.MustParseAddr("127.0.0.1")}}, Imaging: dec}
	if err := tm.Open(); err != nil {
		t.Fatal(err)
	}
	defer tm.Close()

	// iPXE over HTTP: the MAC from ?mac=, the base URL as the client used it.
	hs := httptest.NewServer(&Server{Root: t.TempDir(), Templates: tm})
	defer hs.Close()
	get := func(q string) string {
		resp, err := http.Get(hs.URL + "/boot.ipxe?mac=" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", q, resp.StatusCode, b)
		}
		return string(b)
	}
	out := get(mac1.String())
	for _, want := range []string{"#!ipxe\n", "kernel " + hs.URL + "/deploy/vmlinuz initrd=deploy.cpio.gz mtftpd.http=" + hs.URL + " mtftpd.server=127.0.0.1:69",
		"initrd --name deploy.cpio.gz " + hs.URL + "/deploy/deploy.cpio.gz\nboot\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("iPXE deploy script lacks %q:\n%s", want, out)
		}
	}
	if out := get(mac2.String()); !strings.HasPrefix(out, "#!ipxe\n") || !strings.Contains(out, "\nexit\n") || strings.Contains(out, "kernel") {
		t.Errorf("iPXE local script:\n%s", out)
	}

	// pxelinux over TFTP: the machine named by the host table's address.
	data, ok, err := tm.Render("pxelinux.cfg/default", netip.MustParseAddrPort("127.0.0.1:2000"), netip.MustParseAddr("192.0.2.1"))
	if err != nil || !ok {
		t.Fatalf("pxelinux: %v %v", ok, err)
	}
	for _, want := range []string{"DEFAULT deploy\n", "KERNEL deploy/vmlinuz\n", "INITRD deploy/deploy.cpio.gz\n",
		"APPEND mtftpd.http=http://192.0.2.1:8080 mtftpd.server=192.0.2.1:69 mtftpd.token=t\n", "IPAPPEND 2\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("pxelinux deploy config lacks %q:\n%s", want, data)
		}
	}
	data, _, _ = tm.Render("pxelinux.cfg/default", netip.MustParseAddrPort("127.0.0.9:2000"), netip.MustParseAddr("192.0.2.1"))
	if !strings.Contains(string(data), "DEFAULT local\n") || !strings.Contains(string(data), "LOCALBOOT 0") {
		t.Errorf("pxelinux for a machine nobody names:\n%s", data)
	}

	// iPXE for mac1 and mac2, pxelinux for mac1; a client no MAC names
	// is not asked about.
	dec.mu.Lock()
	n := len(dec.calls)
	dec.mu.Unlock()
	if n != 3 {
		t.Errorf("decider asked %d times, want 3: %v", n, dec.calls)
	}
	// A template that does not read .Imaging never asks (its render must
	// not count an attempt).
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "grub.cfg"), []byte("set mac={{.MAC}}\n"), 0o644)
	plain := &Templates{Dir: dir, Hosts: tm.Hosts, Imaging: dec}
	if err := plain.Open(); err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if data, _, err := plain.Render("grub.cfg", netip.MustParseAddrPort("127.0.0.1:2000"), netip.MustParseAddr("127.0.0.1")); err != nil || string(data) != "set mac=52:54:00:00:00:01\n" {
		t.Fatalf("grub.cfg: %q %v", data, err)
	}
	if len(dec.calls) != n {
		t.Errorf("a template without .Imaging asked the decider: %v", dec.calls)
	}
}
