package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestSecurityKeysValidated: the keys of issue 13 (docs/security.md)
// refuse bad values, naming the field.
func TestSecurityKeysValidated(t *testing.T) {
	for in, want := range map[string]string{
		"[http]\napi_allow = [\"192.0.2.0/24\", \"lan\"]":                        "http.api_allow[1]",
		"[http]\napi_hosts = [\"boot.lab:80\"]":                                  "http.api_hosts[0]",
		"[http]\napi_hosts = [\"\"]":                                             "http.api_hosts[0]",
		"[dhcp]\nmode = \"proxy\"\nrelays = [\"198.51.100.1\", \"2001:db8::1\"]": "dhcp.relays[1]",
		"[dhcp]\nmode = \"proxy\"\nrelays = [\"relay1\"]":                        "dhcp.relays[0]",
		"[origin]\nmax_size = -1":                                                "origin.max_size",
		"[origin]\nnegative_ttl = \"-1s\"":                                       "origin.negative_ttl",
		"[origin]\nwait = \"0s\"":                                                "origin.wait",
		"[http]\nmax_conns = 0":                                                  "http.max_conns",
		"[http]\nmax_conns_per_ip = 4096":                                        "http.max_conns_per_ip",
	} {
		c := Defaults()
		err := Parse([]byte(in), &c)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", in, err, want)
		}
	}
	c := Defaults()
	if err := Parse([]byte("[http]\napi_allow = [\"127.0.0.1\", \"192.0.2.7/24\", \"::1\"]\napi_hosts = [\"boot.lab\"]"), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("::1/128")}
	if got := Prefixes(c.HTTP.APIAllow); !slices.Equal(got, want) {
		t.Fatalf("Prefixes = %v, want %v", got, want)
	}
}
