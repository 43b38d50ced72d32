package config

import (
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestDefaultsValid(t *testing.T) {
	c := Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestParseAndFlags(t *testing.T) {
	c := Defaults()
	err := Parse([]byte(`
[tftp]
root = "/data/boot"
max_windowsize = 16
min_rto = "20ms"
[log]
format = "json"
`), &c)
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	apply := Flags(fs)
	if err := fs.Parse([]string{"--tftp.max_windowsize", "32", "--tftp.allow_overwrite", "--tftp.session_lifetime", "5m"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&c); err != nil {
		t.Fatal(err)
	}
	if c.TFTP.Root != "/data/boot" || c.TFTP.MaxWindow != 32 || !c.TFTP.AllowOverwrite ||
		c.TFTP.MinRTO.Duration != 20*time.Millisecond || c.TFTP.Lifetime.Duration != 5*time.Minute || c.Log.Format != "json" {
		t.Fatalf("effective config wrong: %+v", c)
	}
	// Encode → Parse gives the same config back (what --print-config shows
	// is loadable).
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	c2 := Defaults()
	if err := Parse(b, &c2); err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(c2, c) {
		t.Fatalf("round trip:\n%+v\n%+v", c, c2)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		"[tftp]\nmax_blksize = 70000":       "tftp.max_blksize",
		"[tftp]\nmax_windowsize = 0":        "tftp.max_windowsize",
		"[tftp]\nlisten = \"nohost\"":       "tftp.listen",
		"[tftp]\nmin_rto = \"fast\"":        "not a duration",
		"[tftp]\nmax_rto = \"10ms\"":        "tftp.max_rto",
		"[tftp]\nretries = 0":               "tftp.retries",
		"\"\\":                              "invalid escape",
		"[tftp]\nmax_blksiz = 1468":         "unknown field(s): tftp.max_blksiz",
		"[log]\nlevel = \"loud\"":           "log.level",
		"[tftp]\nroot = 5":                  "root",
		"[tftp\nroot = \"x\"":               "At line 2",
		"[tftp]\nsession_lifetime = \"0s\"": "tftp.session_lifetime",
		"[dhcp]\nmode = \"full\"":           "dhcp.mode",
		"[dhcp]\nmode = \"server\"":         "dhcp.subnet: server mode needs",
		"[dhcp]\nmode = \"server\"\n[[dhcp.subnet]]\nprefix = \"192.0.2.0/24\"\nrange = \"192.0.2.200-192.0.2.100\"":   "dhcp.subnet[0].range",
		"[dhcp]\nmode = \"server\"\n[[dhcp.subnet]]\nprefix = \"192.0.2.0/24\"\nrange = \"198.51.100.1-198.51.100.9\"": "not inside",
		"[dhcp]\nmode = \"proxy\"\n[[dhcp.host]]\nmac = \"52:54:00\"":                                                  "dhcp.host[0].mac",
		"[templates]\ndir = \"/t\"\n[[dhcp.host]]\nmac = \"52:54:00\"":                                                 "dhcp.host[0].mac", // DHCP off: the templates still use the table
		"[tftp]\nroot = \"http://origin:8080/boot/\"":                                                                  "origin.cache_dir",
		"[tftp]\nroot = \"https://\"\n[origin]\ncache_dir = \"/c\"":                                                    "tftp.root",
		"[http]\nroot = \"http://o/?sig=x\"\n[origin]\ncache_dir = \"/c\"":                                             "http.root",
		"[origin]\ntimeout = \"0s\"":                                                                                   "origin.timeout",
		"[dhcp]\nmode = \"proxy\"\n[[dhcp.boot]]\nfile = \"{{.HTTP\"":                                                  "dhcp.boot[0].file",
		"[dhcp]\nmode = \"proxy\"\n[[dhcp.boot]]\nhttp_client = true\nfile = \"ipxe.efi\"":                             "dhcp.boot[0].file",
		"[dhcp]\nmode = \"proxy\"\nhttp_base = \"192.0.2.1\"":                                                          "dhcp.http_base",
		"[mtftp]\npxe_file_groups = \"239.255.0.0/16\"":                                                                "overlaps mtftp.group_range",
		"[mtftp]\npxe_file_groups = \"239.1.0.0/24\"":                                                                  "mtftp.pxe_file_groups",
		"[mtftp]\npxe_port_order = \"intel\"":                                                                          "mtftp.pxe_port_order",
		"[mtftp]\npxe_tmout = 0":                                                                                       "mtftp.pxe_tmout",
		"[mtftp]\npxe_delay = 300":                                                                                     "mtftp.pxe_delay",

		"[tftp]\nmax_unconfirmed = 0":            "tftp.max_unconfirmed",
		"[tftp]\nmax_unconfirmed_per_prefix = 0": "tftp.max_unconfirmed_per_prefix",
		"[tftp]\nconfirm_timeout = \"0s\"":       "tftp.confirm_timeout",
	}
	for in, want := range cases {
		c := Defaults()
		err := Parse([]byte(in), &c)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", in, err, want)
		}
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	apply := Flags(fs)
	fs.Parse([]string{"--tftp.retries", "many"})
	c := Defaults()
	if err := apply(&c); err == nil || !strings.Contains(err.Error(), "--tftp.retries") {
		t.Fatalf("bad flag value: %v", err)
	}
}

// A boolean key alone means true; =false turns a key off; the last of
// several wins; a bad value is named with its key.
func TestBoolFlags(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		overwrite bool
		mtftp     bool
	}{
		{[]string{"--tftp.allow_overwrite"}, true, true},
		{[]string{"--tftp.allow_overwrite", "--mtftp.enabled=false"}, true, false},
		{[]string{"--mtftp.enabled=false", "--mtftp.enabled"}, false, true},
		{[]string{"--tftp.allow_overwrite=true", "--tftp.allow_overwrite=0"}, false, true},
	} {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		apply := Flags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		c := Defaults()
		if err := apply(&c); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.TFTP.AllowOverwrite != tc.overwrite || c.MTFTP.Enabled != tc.mtftp {
			t.Errorf("%v: allow_overwrite %v, mtftp.enabled %v; want %v, %v", tc.args,
				c.TFTP.AllowOverwrite, c.MTFTP.Enabled, tc.overwrite, tc.mtftp)
		}
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	apply := Flags(fs)
	fs.Parse([]string{"--mtftp.enabled=maybe"})
	c := Defaults()
	if err := apply(&c); err == nil || !strings.Contains(err.Error(), "--mtftp.enabled") {
		t.Fatalf("bad bool: %v", err)
	}
}

// Every field has a flag and a help text.
func TestEveryFieldHasAFlag(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	Flags(fs)
	for _, name := range FieldNames() {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("no flag for %s", name)
			continue
		}
		if f.Usage == "" {
			t.Errorf("%s has no help text", name)
		}
	}
}

// FuzzParse: any file either loads or returns an error; never a panic, and
// a config that loads and validates prints back to the same config.
func FuzzParse(f *testing.F) {
	f.Add([]byte("[tftp]\nroot = \"/srv\"\nmax_windowsize = 8\n[log]\nlevel = \"debug\"\n"))
	f.Add([]byte("[tftp]\nmin_rto = \"10ms\"\n"))
	// Typed values, good and bad (valueError names the bad one).
	f.Add([]byte(dhcpKey("relays = [\"192.0.2.1\", \"198.51.100.0/24\"]") + "router = \"192.0.2.1\"\ndns = [\"192.0.2.53\"]\n[[dhcp.host]]\nmac = \"52:54:00:00:00:01\"\n"))
	f.Add([]byte("[[dhcp.subnet]]\nprefix = \"192.0.2.0/24\"\n[[dhcp.subnet]]\ndns = [\"x\"]\n[http]\napi_allow = [\"lan\"]\n"))
	// Boot rule architectures by number and by name (ArchList).
	f.Add([]byte("[dhcp]\nmode = \"proxy\"\n[[dhcp.boot]]\narch = [\"uefi-arm64\", 7, \"uefi-x64\"]\nfile = \"a.efi\"\n[[dhcp.boot]]\narch = [\"arm\", 70000]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Defaults()
		if err := Parse(b, &c); err != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		out, err := c.Encode()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		c2 := Defaults()
		if err := Parse(out, &c2); err != nil || !reflect.DeepEqual(c2, c) {
			t.Fatalf("round trip: %v\n%s", err, out)
		}
	})
}

func TestChanged(t *testing.T) {
	a := Defaults()
	if c := Changed(a, a); len(c) != 0 {
		t.Fatalf("identical configs differ in %v", c)
	}
	b := Defaults()
	b.Log.Level = "debug"
	b.TFTP.Listen = netip.MustParseAddrPort("127.0.0.1:69")
	b.TFTP.MinRTO = Duration{time.Second}
	b.DHCP.Boot = []BootRule{{Name: "x", File: "y"}}
	b.DHCP.Interfaces = []string{"eth1"}
	want := []string{"dhcp.boot", "dhcp.interfaces", "log.level", "tftp.listen", "tftp.min_rto"}
	if c := Changed(a, b); !slices.Equal(c, want) {
		t.Fatalf("Changed = %v, want %v", c, want)
	}
}

// TestWriteDirOverlap: an upload directory inside a served tree (or one
// containing it) is a config error: an upload named pxelinux.cfg/01-<mac>
// would take over that machine's boot (issue 13, finding 11). A symlink
// that leads into a served tree counts too.
func TestWriteDirOverlap(t *testing.T) {
	base := t.TempDir()
	root, web, tmpl, up := base+"/tftp", base+"/www", base+"/tmpl", base+"/up"
	for _, d := range []string{root + "/pxelinux.cfg", web, tmpl, up} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(root+"/pxelinux.cfg", base+"/link"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name               string
		write, http, templ string
		bad                bool
	}{
		{"apart", up, web, tmpl, false},
		{"inside tftp.root", root + "/pxelinux.cfg", "", "", true},
		{"same as tftp.root", root + "/", "", "", true},
		{"contains tftp.root", base, "", "", true},
		{"inside http.root", web + "/uploads", web, "", true},
		{"inside templates.dir", tmpl, "", tmpl, true},
		{"symlink into tftp.root", base + "/link", "", "", true},
		{"relative, inside", "../tftp/x", "", "", true},
		{"sibling with a common prefix", root + "-uploads", "", "", false},
	}
	t.Chdir(up) // for the relative case
	for _, tc := range cases {
		c := Defaults()
		c.TFTP.Root, c.TFTP.WriteDir, c.HTTP.Root, c.Templates.Dir = root, tc.write, tc.http, tc.templ
		err := c.Validate()
		if tc.bad != (err != nil && strings.Contains(err.Error(), "tftp.write_dir")) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
