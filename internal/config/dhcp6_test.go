package config

import (
	"strings"
	"testing"
)

const dhcp6OK = "[dhcp6]\nenabled = true\ninterfaces = [\"lab0\"]\nprefix = \"2001:db8:1::/64\"\nrange = \"2001:db8:1::100-2001:db8:1::1ff\"\n"

// TestDHCP6 checks a valid [dhcp6] and that each bad key is named.
func TestDHCP6(t *testing.T) {
	c := Defaults()
	if err := Parse([]byte(dhcp6OK+"dns = [\"2001:db8:1::53\"]\ndefault_arch = 7\n"), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid [dhcp6]: %v", err)
	}
	if c.DHCP6.Range.Last.String() != "2001:db8:1::1ff" || c.DHCP6.DefaultArch != 7 {
		t.Errorf("parsed %+v", c.DHCP6)
	}
	for extra, want := range map[string]string{
		"prefix = \"192.0.2.0/24\"":                        "dhcp6.prefix",
		"range = \"2001:db8:2::1-2001:db8:2::9\"":          "not inside",
		"range = \"2001:db8:1::1ff-2001:db8:1::100\"":      "ends before",
		"range = \"2001:db8:1::1-2001:db8:1::1:0:1\"":      "upper 96 bits",
		"range = \"2001:db8:1::1:0-2001:db8:1::2:0\"":      "at most 65536 addresses",
		"interfaces = []":                                  "dhcp6.interfaces",
		"listen = \"[2001:db8:1::1]:547\"":                 "dhcp6.listen",
		"default_arch = -2":                                "dhcp6.default_arch",
		"dns = [\"192.0.2.53\"]":                           "dhcp6.dns[0]",
		"tftp_server = \"192.0.2.1\"":                      "dhcp6.tftp_server",
		"lease_file = \"/l\"\n[dhcp]\nlease_file = \"/l\"": "dhcp6.lease_file",
	} {
		in := dhcp6OK + extra
		// A key given twice is a TOML error: drop the valid line first.
		for _, line := range strings.Split(dhcp6OK, "\n") {
			if k, _, ok := strings.Cut(line, " = "); ok && strings.HasPrefix(extra, k+" ") {
				in = strings.Replace(dhcp6OK, line+"\n", "", 1) + extra
			}
		}
		c := Defaults()
		err := Parse([]byte(in), &c)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", extra, err, want)
		}
	}
}
