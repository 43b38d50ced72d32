package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/tftp"
)

// fakeLeases is the DHCP server's lease table, reduced to what the
// templates ask.
type fakeLeases map[netip.Addr]Lease

func (f fakeLeases) Lookup(ip netip.Addr) (Lease, bool) { l, ok := f[ip]; return l, ok }

var (
	mac1 = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x01}
	mac2 = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}
)

// templateFixture writes a templates directory, a file root and starts
// the mirror and a TFTP server on loopback, both serving the templates.
// 127.0.0.1 holds a lease for mac2 (arch 7).
type templateFixture struct {
	dir, root string
	http      string // base URL
	tftpPort  string
	log       *testutil.SyncBuffer
	tmpl      *Templates
}

func newTemplateFixture(t *testing.T) *templateFixture {
	t.Helper()
	f := &templateFixture{dir: t.TempDir(), root: t.TempDir(), log: &testutil.SyncBuffer{}}
	write := func(dir, name, text string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(f.dir, "ks/{mac}.cfg", `{{if not .Known}}{{notFound}}{{end}}# {{.Hostname}} {{.MAC}} from {{.IP}} over {{.Proto}}
network --hostname={{.Hostname}}
ignoredisk --only-use={{required "disk" .Vars.disk}}
url --url={{.HTTP}}/os/
`)
	write(f.dir, "pxelinux.cfg/01-{mac}", `DEFAULT install
LABEL install
  KERNEL vmlinuz
  APPEND inst.ks={{.HTTP}}/ks/{{.MAC}}.cfg hostname={{.Hostname}} role={{.Vars.role}}
`)
	write(f.dir, "grub.cfg", "set host={{.Hostname}} mac={{.MACDash}} arch={{.Arch}}\n")
	write(f.dir, "boot.ipxe", "#!ipxe\necho {{.MAC}} {{.Vars.role}} arch {{.Arch}}\n")
	write(f.dir, "broken/{mac}.cfg", "line one\nline two {{.MAC}}\nline three {{.Vars.disk | nope}}\n")
	write(f.dir, "exec/{mac}.cfg", "line one\n{{required \"disk\" .Vars.nodisk}}\n")
	write(f.dir, ".ks.cfg.swp", "{{ not a template")
	write(f.root, "pxelinux.cfg/default", "DEFAULT local\n")
	write(f.root, "os/repodata/repomd.xml", "<repomd/>\n")

	log := zerolog.New(f.log)
	f.tmpl = &Templates{
		Dir: f.dir, Log: log, HTTPPort: 8080,
		Hosts: []Host{
			{MAC: mac1, Hostname: "web1", Vars: map[string]string{"disk": "sda", "role": "web"}},
			{MAC: mac2, Hostname: "db1", Vars: map[string]string{"disk": "nvme0n1", "role": "db"}},
		},
		Leases: fakeLeases{netip.MustParseAddr("127.0.0.1"): {MAC: mac2, Hostname: "from-lease", Arch: "7"}},
	}
	if err := f.tmpl.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.tmpl.Close() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := &Server{Root: f.root, Templates: f.tmpl, Log: log}
	ctx, cancel := context.WithCancel(context.Background())
	webDone := make(chan error, 1)
	go func() { webDone <- web.Serve(ctx, ln) }()
	f.http = "http://" + ln.Addr().String()

	store, err := filestore.Open(f.root)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ts := &tftp.Server{Files: store, Virtual: f.tmpl, Log: log}
	tftpDone := make(chan error, 1)
	go func() { tftpDone <- ts.Serve(ctx, pc) }()
	f.tftpPort = strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	t.Cleanup(func() {
		cancel()
		if err := <-webDone; err != nil {
			t.Errorf("mirror: %v", err)
		}
		if err := <-tftpDone; err != nil && !errors.Is(err, tftp.ErrServerClosed) {
			t.Errorf("tftp: %v", err)
		}
		store.Close()
	})
	return f
}

// tftpGet downloads name with tftp-hpa's client.
func (f *templateFixture) tftpGet(t *testing.T, name string) (string, error) {
	t.Helper()
	bin := testutil.Tool(t, "tftp") // the tftp-hpa client
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msg, err := exec.CommandContext(ctx, bin, "-m", "binary", "127.0.0.1", f.tftpPort, "-c", "get", name, out).CombinedOutput()
	b, _ := os.ReadFile(out)
	if err == nil && strings.Contains(string(msg), "Error code") {
		err = errors.New(strings.TrimSpace(string(msg))) // tftp-hpa exits 0 on a server ERROR
	}
	return string(b), err
}

// TestTemplatesTwoMACs: one kickstart template and one pxelinux template
// render differently for two machines, over HTTP (curl) and TFTP
// (tftp-hpa); the file roots still serve everything else.
func TestTemplatesTwoMACs(t *testing.T) {
	f := newTemplateFixture(t)
	for _, c := range []struct{ path, want string }{
		{"/ks/52:54:00:00:00:01.cfg", "# web1 52:54:00:00:00:01 from 127.0.0.1 over http\nnetwork --hostname=web1\nignoredisk --only-use=sda\nurl --url=" + f.http + "/os/\n"},
		{"/ks/52-54-00-00-00-02.cfg", "# db1 52:54:00:00:00:02 from 127.0.0.1 over http\nnetwork --hostname=db1\nignoredisk --only-use=nvme0n1\nurl --url=" + f.http + "/os/\n"},
		{"/ks/525400000002.cfg", "# db1 52:54:00:00:00:02 from 127.0.0.1 over http\nnetwork --hostname=db1\nignoredisk --only-use=nvme0n1\nurl --url=" + f.http + "/os/\n"},
		// No MAC in the name: ?mac= names the machine, else the lease does.
		{"/boot.ipxe?mac=52:54:00:00:00:01&arch=16", "#!ipxe\necho 52:54:00:00:00:01 web arch 16\n"},
		{"/boot.ipxe", "#!ipxe\necho 52:54:00:00:00:02 db arch 7\n"},
		{"/os/repodata/repomd.xml", "<repomd/>\n"},
	} {
		body, h := curl(t, f.http+c.path)
		if body != c.want || !strings.Contains(h, "200 OK") {
			t.Errorf("GET %s:\n%s\nwant\n%s\n%s", c.path, body, c.want, h)
		}
		if strings.HasPrefix(c.path, "/ks/") && !strings.Contains(h, "Cache-Control: no-store") {
			t.Errorf("GET %s: a per-host file without Cache-Control: no-store\n%s", c.path, h)
		}
	}
	// A machine not in the host table: the template says notFound.
	if _, h := curl(t, f.http+"/ks/52:54:00:99:99:99.cfg"); !strings.Contains(h, "404") {
		t.Errorf("unknown MAC: %s", h)
	}
	// Range requests work on rendered files too (ServeContent).
	if body, _ := curl(t, "-r", "0-5", f.http+"/ks/52:54:00:00:00:01.cfg"); body != "# web1" {
		t.Errorf("range of a template: %q", body)
	}

	for _, c := range []struct{ name, want string }{
		{"pxelinux.cfg/01-52-54-00-00-00-01", "DEFAULT install\nLABEL install\n  KERNEL vmlinuz\n  APPEND inst.ks=http://127.0.0.1:8080/ks/52:54:00:00:00:01.cfg hostname=web1 role=web\n"},
		{"pxelinux.cfg/01-52-54-00-00-00-02", "DEFAULT install\nLABEL install\n  KERNEL vmlinuz\n  APPEND inst.ks=http://127.0.0.1:8080/ks/52:54:00:00:00:02.cfg hostname=db1 role=db\n"},
		{"/grub.cfg", "set host=db1 mac=52-54-00-00-00-02 arch=7\n"},
		{"pxelinux.cfg/default", "DEFAULT local\n"},
	} {
		got, err := f.tftpGet(t, c.name)
		if err != nil || got != c.want {
			t.Errorf("TFTP %s: %q, %v\nwant %q", c.name, got, err, c.want)
		}
	}
	if _, err := f.tftpGet(t, "ks/52-54-00-99-99-99.cfg"); err == nil || !strings.Contains(err.Error(), "Error code 1") {
		t.Errorf("TFTP, unknown MAC: %v, want ERROR 1 (file not found)", err)
	}
}

// TestTemplateErrors: a template that does not parse and one that fails
// while running both give a 500 with no partial file, and a log line
// naming the template and its line; over TFTP an ERROR.
func TestTemplateErrors(t *testing.T) {
	f := newTemplateFixture(t)
	for _, c := range []struct {
		path, template string
		line           int
	}{
		{"/broken/52:54:00:00:00:01.cfg", "broken/{mac}.cfg", 3},
		{"/exec/52:54:00:00:00:01.cfg", "exec/{mac}.cfg", 2},
	} {
		body, h := curl(t, f.http+c.path)
		if !strings.Contains(h, "500 Internal Server Error") || strings.Contains(body, "line one") {
			t.Errorf("GET %s: want a 500 and nothing rendered, got\n%s%s", c.path, h, body)
		}
		found := false
		for _, l := range strings.Split(f.log.String(), "\n") {
			var e struct {
				Level, Template, Message string
				Line                     int
			}
			if json.Unmarshal([]byte(l), &e) == nil && e.Template == c.template && e.Line == c.line && e.Level == "error" {
				found = true
			}
		}
		if !found {
			t.Errorf("no error log line naming %s line %d:\n%s", c.template, c.line, f.log.String())
		}
	}
	if _, err := f.tftpGet(t, "broken/52-54-00-00-00-01.cfg"); err == nil || !strings.Contains(err.Error(), "Error code 2") {
		t.Errorf("TFTP, broken template: %v, want ERROR 2", err)
	}
	// The swap file next to the templates is not one.
	if _, h := curl(t, f.http+"/.ks.cfg.swp"); !strings.Contains(h, "404") {
		t.Errorf("an editor swap file was taken for a template: %s", h)
	}
}

// TestTemplateReload: an edited template is used without a restart.
func TestTemplateReload(t *testing.T) {
	f := newTemplateFixture(t)
	if err := os.WriteFile(filepath.Join(f.dir, "grub.cfg"), []byte("edited {{.Hostname}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(f.dir, "grub.cfg"), time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	f.tmpl.mu.Lock()
	f.tmpl.checked = time.Time{} // as if refreshEvery had passed
	f.tmpl.mu.Unlock()
	if body, _ := curl(t, f.http+"/grub.cfg"); body != "edited db1\n" {
		t.Errorf("after an edit: %q", body)
	}
}

// FuzzTemplateMatch: any request name either matches no template or one
// whose {mac} part is a MAC that reads back the same in every spelling;
// nothing panics (names come from clients).
func FuzzTemplateMatch(f *testing.F) {
	for _, s := range []string{"ks/52:54:00:00:00:01.cfg", "pxelinux.cfg/01-52-54-00-00-00-01", "ks/525400000001.cfg",
		"a", "aa", "ks/.cfg", "pxelinux.cfg/01-", "ks/52:54-00:00:00:01.cfg", "grub.cfg", `\ks\52:54:00:00:00:01.cfg`} {
		f.Add(s)
	}
	dir := f.TempDir()
	tm := &Templates{Dir: dir}
	if err := tm.Open(); err != nil {
		f.Fatal(err)
	}
	defer tm.Close()
	for _, name := range []string{"ks/{mac}.cfg", "pxelinux.cfg/01-{mac}", "a{mac}a", "{mac}"} {
		p := &tmpl{name: name, hasMAC: true}
		p.prefix, p.suffix, _ = strings.Cut(name, macPlaceholder)
		tm.patterns = append(tm.patterns, p)
	}
	tm.index = map[string]*tmpl{"grub.cfg": {name: "grub.cfg"}}
	f.Fuzz(func(t *testing.T, name string) {
		tm.mu.Lock()
		tm.checked = time.Now().Add(time.Hour) // keep the fuzzed index
		tm.mu.Unlock()
		p, mac := tm.match(name)
		if p == nil || !p.hasMAC {
			if mac != nil {
				t.Fatalf("%q: a MAC without a {mac} template", name)
			}
			return
		}
		if len(mac) != 6 {
			t.Fatalf("%q matched %s with a %d-byte MAC", name, p.name, len(mac))
		}
		for _, spelling := range []string{mac.String(), strings.ReplaceAll(mac.String(), ":", "-"), strings.ToUpper(strings.ReplaceAll(mac.String(), ":", ""))} {
			if again, ok := parseMAC(spelling); !ok || again.String() != mac.String() {
				t.Fatalf("%q: %s does not read back from %q", name, mac, spelling)
			}
		}
	})
}
