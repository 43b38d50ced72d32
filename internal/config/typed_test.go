package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

const subnet = "[dhcp]\nmode = \"server\"\n[[dhcp.subnet]]\nprefix = \"192.0.2.0/24\"\nrange = \"192.0.2.100-192.0.2.199\"\n"

// dhcpKey is a server-mode [dhcp] section with key in it, and one subnet.
func dhcpKey(key string) string {
	return "[dhcp]\nmode = \"server\"\n" + key + "\n[[dhcp.subnet]]\nprefix = \"192.0.2.0/24\"\nrange = \"192.0.2.100-192.0.2.199\"\n"
}

// load parses and validates in, as serve does.
func load(in string) (Config, error) {
	c := Defaults()
	err := Parse([]byte(in), &c)
	if err == nil {
		err = c.Validate()
	}
	return c, err
}

// TestTypedValueErrors: an address, prefix, range or MAC that does not
// parse is refused when the file is decoded, naming the key (with its
// index in a list or table array), the value and the form wanted; one
// case per type, in a plain key, a list and a table array.
func TestTypedValueErrors(t *testing.T) {
	for in, want := range map[string]string{
		"[tftp]\nlisten = \":69\"":                                                      `line 2: tftp.listen: ":69" is not an IP address and port like 0.0.0.0:69`,
		"[dhcp]\ntftp_server = \"boot\"":                                                `dhcp.tftp_server: "boot" is not an IP address like 192.0.2.1`,
		"[mtftp]\ngroup_range = \"239.255.0.0\"":                                        `mtftp.group_range: "239.255.0.0" is not a prefix like 192.0.2.0/24`,
		"[http]\napi_allow = [\"127.0.0.1\", \"lan\"]":                                  `http.api_allow[1]: "lan" is not an address or prefix`,
		"[[dhcp.host]]\nmac = \"52:54:00:00:00:01\"\n[[dhcp.host]]\nmac = \"52:54:00\"": `line 4: dhcp.host[1].mac: "52:54:00" is not an Ethernet MAC`,
		"[[dhcp.subnet]]\nprefix = \"192.0.2.0/24\"\nrange = \"192.0.2.100\"":           `dhcp.subnet[0].range: "192.0.2.100" is not a range like`,
		"[[dhcp.subnet]]\ndns = [\"192.0.2.53\", \"dns1\"]":                             `dhcp.subnet[0].dns[1]: "dns1" is not an IP address`,
		"[[dhcp.subnet]]\nrouter = 5":                                                   `dhcp.subnet[0].router: "5" is not an IP address`,
		"[tftp]\nmin_rto = \"fast\"":                                                    `not a duration`,
	} {
		_, err := load(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
	// Flags decode the same types, with the same words.
	for _, args := range [][]string{
		{"--tftp.listen", "nohost"}, {"--http.api_allow", "127.0.0.1,lan"}, {"--mtftp.pxe_group", "group"},
	} {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		apply := Flags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		c := Defaults()
		if err := apply(&c); err == nil || !strings.Contains(err.Error(), args[0]+": ") || !strings.Contains(err.Error(), " is not ") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestTypedValueChecks: values that parse but do not fit their use
// (IPv6 where only IPv4 works, outside the multicast scope or the
// subnet, overlapping, twice) are refused by Validate, naming the key and
// the value: one case per check.
func TestTypedValueChecks(t *testing.T) {
	host := "[[dhcp.host]]\nmac = \"52:54:00:00:00:01\"\nip = \"192.0.2.10\"\n"
	for in, want := range map[string]string{
		"[tftp]\nlisten = \"[::ffff:192.0.2.1]:69\"":                                                 "tftp.listen: [::ffff:192.0.2.1]:69 is a v4-mapped address: write 192.0.2.1:69",
		"[http]\nlisten = \"[::ffff:192.0.2.1]:80\"":                                                 "http.listen: [::ffff:192.0.2.1]:80 is a v4-mapped address",
		"[mtftp]\npxe_listen = \"[2001:db8::1]:1759\"":                                               "mtftp.pxe_listen: [2001:db8::1]:1759 is not an IPv4 address and port (multicast is IPv4 only)",
		"[tftp]\nlisten = \"\"":                                                                      "tftp.listen: must be set",
		dhcpKey("listen = \"192.0.2.1:67\""):                                                         "dhcp.listen: 192.0.2.1:67: DHCP must listen on 0.0.0.0",
		dhcpKey("relays = [\"2001:db8::/64\"]"):                                                      `dhcp.relays[0]: "2001:db8::/64" is not IPv4`,
		dhcpKey("tftp_server = \"2001:db8::1\""):                                                     "dhcp.tftp_server: 2001:db8::1 is not an IPv4 address",
		"[mtftp]\ngroup_range = \"224.0.0.0/24\"":                                                    "mtftp.group_range: 224.0.0.0/24 is not inside 239.255.0.0/16",
		"[mtftp]\ngroup_range = \"\"":                                                                `mtftp.group_range: "invalid Prefix" is not an IPv4 prefix`,
		"[mtftp]\npxe_group = \"224.0.1.1\"":                                                         `mtftp.pxe_group: "224.0.1.1" is not a group inside`,
		"[mtftp]\npxe_listen = \"0.0.0.0:1759\"":                                                     "mtftp.pxe_listen: 0.0.0.0:1759 listens on every address",
		"[mtftp]\npxe_listen = \"192.0.2.1:0\"":                                                      "mtftp.pxe_listen: 192.0.2.1:0: port 0",
		"[mtftp]\npxe_file_groups = \"239.255.0.128/25\"":                                            "mtftp.pxe_file_groups: 239.255.0.128/25 overlaps mtftp.group_range 239.255.0.0/24",
		subnet + "[[dhcp.subnet]]\nprefix = \"192.0.2.128/25\"\nrange = \"192.0.2.130-192.0.2.140\"": "dhcp.subnet[1].prefix: 192.0.2.128/25 overlaps dhcp.subnet[0].prefix 192.0.2.0/24",
		"[dhcp]\nmode = \"server\"\n[[dhcp.subnet]]\nprefix = \"2001:db8::/64\"":                     `dhcp.subnet[0].prefix: "2001:db8::/64" is not an IPv4 prefix`,
		"[dhcp]\nmode = \"server\"\n[[dhcp.subnet]]\nprefix = \"10.0.0.0/7\"\nrange = \"10.0.0.1-11.255.255.254\"": "dhcp.subnet[0].range: \"10.0.0.1-11.255.255.254\" holds 33554430 addresses",
		"[dhcp]\nmode = \"server\"\n[[dhcp.subnet]]\nprefix = \"192.0.2.0/24\"":                                    "dhcp.subnet[0].range: must be set",
		subnet + "router = \"198.51.100.1\"":                                                                       `dhcp.subnet[0].router: "198.51.100.1" is not an address in 192.0.2.0/24`,
		subnet + "lease_time = \"2000000h\"":                                                                       "dhcp.subnet[0].lease_time: 2000000h0m0s is outside",
		subnet + "domain = \"" + strings.Repeat("a", 256) + "\"":                                                   "dhcp.subnet[0].domain: is 256 bytes",
		subnet + host + host: "dhcp.host[1].mac: 52:54:00:00:00:01 is also dhcp.host[0]'s",
		subnet + host + "[[dhcp.host]]\nmac = \"52:54:00:00:00:02\"\nip = \"192.0.2.10\"\n": "dhcp.host[1].ip: 192.0.2.10 is also dhcp.host[0]'s",
		subnet + "[[dhcp.host]]\nmac = \"52:54:00:00:00:02\"\nip = \"198.51.100.7\"\n":      "dhcp.host[0].ip: 198.51.100.7 is in no [[dhcp.subnet]] prefix",
		subnet + "[[dhcp.host]]\nip = \"192.0.2.7\"\n":                                      "dhcp.host[0].mac: must be set",
		subnet + "[[dhcp.host]]\nmac = \"52:54:00:00:00:02\"\nboot_file = \"{{.X\"\n":       "dhcp.host[0].boot_file: template",
		dhcpKey("interfaces = [\"\"]"):                                                      "dhcp.interfaces[0]: is empty",
	} {
		_, err := load(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q:\nerror %v\nwant  %q", in, err, want)
		}
	}
}

// TestIPv6Listen: tftp.listen and http.listen take IPv6 addresses, the
// wildcard [::] (dual-stack, docs/design.md "IPv6") and a literal.
func TestIPv6Listen(t *testing.T) {
	for _, in := range []string{
		"[tftp]\nlisten = \"[::]:69\"\n[http]\nlisten = \"[::]:80\"",
		"[tftp]\nlisten = \"[::1]:6969\"\n[http]\nlisten = \"[2001:db8::1]:8080\"",
	} {
		c, err := load(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !c.TFTP.Listen.Addr().Is6() || !c.HTTP.Listen.Addr().Is6() {
			t.Fatalf("%q: decoded %v, %v", in, c.TFTP.Listen, c.HTTP.Listen)
		}
	}
}

// TestTypedValuesLoad: the typed keys decode to their values, and
// --print-config writes them back in the file's own forms.
func TestTypedValuesLoad(t *testing.T) {
	c, err := load(dhcpKey(`listen = "0.0.0.0:67"
relays = ["192.0.2.1", "198.51.100.0/24"]
tftp_server = "192.0.2.5"`) + `
[[dhcp.host]]
mac = "52-54-00-00-00-01"
ip = "192.0.2.10"
[http]
listen = "127.0.0.1:8080"
api_allow = ["192.0.2.7/24"]
[mtftp]
pxe_listen = "192.0.2.1:1759"
`)
	if err != nil {
		t.Fatal(err)
	}
	sn := c.DHCP.Subnets[0]
	if sn.Prefix != netip.MustParsePrefix("192.0.2.0/24") || sn.Range != (Range{netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("192.0.2.199")}) ||
		c.DHCP.TFTPServer != netip.MustParseAddr("192.0.2.5") || c.DHCP.Hosts[0].MAC.String() != "52:54:00:00:00:01" ||
		c.HTTP.Listen.Port() != 8080 || c.MTFTP.PXEListen != netip.MustParseAddrPort("192.0.2.1:1759") {
		t.Fatalf("decoded: %+v", c)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("198.51.100.0/24")}
	if got := Prefixes(c.DHCP.Relays); !slices.Equal(got, want) {
		t.Fatalf("relays %v", got)
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`relays = ["192.0.2.1", "198.51.100.0/24"]`, `range = "192.0.2.100-192.0.2.199"`,
		`mac = "52:54:00:00:00:01"`, `api_allow = ["192.0.2.0/24"]`, `tftp_server = "192.0.2.5"`} {
		if !strings.Contains(string(b), w) {
			t.Errorf("printed config lacks %s:\n%s", w, b)
		}
	}
	// Unset optional addresses print empty and load back unset.
	def := Defaults()
	d, _ := def.Encode()
	for _, w := range []string{`pxe_listen = ""`, `tftp_server = ""`, "[http]\n  listen = \"\""} {
		if !strings.Contains(string(d), w) {
			t.Errorf("defaults print lacks %q:\n%s", w, d)
		}
	}
}

// TestExamplesLoad: every examples/*.toml loads and validates (the file
// format stays compatible: what admins copied keeps working).
func TestExamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.toml")
	if len(files) < 6 {
		t.Fatalf("examples: %v", files)
	}
	for _, f := range files {
		c := Defaults()
		if err := Load(f, &c); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	// The demo of `make run`: defaults with loopback addresses (see
	// cmd/mtftpd/serve.go), written as flags would.
	c := Defaults()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	apply := Flags(fs)
	if err := fs.Parse([]string{"--tftp.listen", "127.0.0.1:6969", "--http.listen", "127.0.0.1:8069", "--tftp.root", os.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestNeedRestart: the keys tagged reload:"yes" apply on SIGHUP; any
// other change, a table's included, needs a restart.
func TestNeedRestart(t *testing.T) {
	a := Defaults()
	b := Defaults()
	b.Log.Level = "debug"
	b.TFTP.MaxRequestRate = 5
	b.DHCP.Boot = []BootRule{{File: "x"}}
	b.Imaging.Tasks = []ImagingTask{{Name: "t"}}
	if ch := Changed(a, b); len(NeedRestart(ch)) != 0 || len(ch) != 4 {
		t.Fatalf("live keys: changed %v, need restart %v", ch, NeedRestart(ch))
	}
	b.TFTP.Listen = netip.MustParseAddrPort("127.0.0.1:69")
	b.DHCP.Subnets = []DHCPSubnet{{}}
	b.MTFTP.PXEGroup = netip.MustParseAddr("239.255.1.2")
	want := []string{"dhcp.subnet", "mtftp.pxe_group", "tftp.listen"}
	if got := NeedRestart(Changed(a, b)); !slices.Equal(got, want) {
		t.Fatalf("NeedRestart = %v, want %v", got, want)
	}
}
