package udpio

import (
	"net/netip"
	"testing"
)

func TestNetwork(t *testing.T) {
	for _, c := range []struct {
		addr, proto, want string
	}{
		{"", "udp", "udp4"},
		{"0.0.0.0", "udp", "udp4"},
		{"192.0.2.1", "tcp", "tcp4"},
		{"::ffff:192.0.2.1", "udp", "udp4"},
		{"::", "udp", "udp"},
		{"::", "tcp", "tcp"},
		{"::1", "udp", "udp6"},
		{"2001:db8::1", "tcp", "tcp6"},
	} {
		var a netip.Addr
		if c.addr != "" {
			a = netip.MustParseAddr(c.addr)
		}
		if got := Network(c.proto, a); got != c.want {
			t.Errorf("Network(%q, %q) = %q, want %q", c.proto, c.addr, got, c.want)
		}
	}
}
