package udpio

import "net/netip"

// Network is the Go network name ("udp4", "udp", "udp6" for proto "udp";
// the same for "tcp") a listener on address a opens, so that the address
// alone says which families it serves (docs/design.md, "IPv6"):
//
//   - an IPv4 address (0.0.0.0 included) or none: proto+"4", IPv4 only.
//     Go's plain "udp" would open a dual-stack socket for 0.0.0.0.
//   - the IPv6 wildcard ::: plain proto, which Go opens as one AF_INET6
//     socket with IPV6_V6ONLY=0 (dual-stack): IPv4 clients arrive as
//     v4-mapped addresses, which this package unmaps at the socket edge.
//   - any other IPv6 address: proto+"6", that address only.
func Network(proto string, a netip.Addr) string {
	switch {
	case !a.IsValid() || a.Is4() || a.Is4In6():
		return proto + "4"
	case a.IsUnspecified():
		return proto
	}
	return proto + "6"
}
