package ra

import (
	"fmt"
	"net"

	"github.com/rs/zerolog"
)

// Open opens an NDP socket (raw ICMPv6: root or CAP_NET_RAW, so before the
// privilege drop) on each named interface, or on every interface that is up,
// multicast-capable and neither loopback nor point-to-point when names is
// empty; there an interface that cannot (no IPv6, say) is skipped with a
// log line, while a named one that cannot is an error.
func Open(names []string, log zerolog.Logger) ([]*Iface, error) {
	var ifis []net.Interface
	if len(names) == 0 {
		all, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Errorf("ra: listing interfaces: %w", err)
		}
		for _, ifi := range all {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 &&
				ifi.Flags&(net.FlagLoopback|net.FlagPointToPoint) == 0 {
				ifis = append(ifis, ifi)
			}
		}
	} else {
		for _, name := range names {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return nil, fmt.Errorf("ra: interface %q: %w", name, err)
			}
			ifis = append(ifis, *ifi)
		}
	}
	var out []*Iface
	for _, ifi := range ifis {
		f, err := openIface(ifi)
		if err != nil && len(names) > 0 {
			closeAll(out)
			return nil, err
		}
		if err != nil {
			log.Info().Err(err).Str("interface", ifi.Name).Msg("ipv6: no router advertisements on this interface")
			continue
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, ErrNoInterface
	}
	return out, nil
}

func closeAll(fs []*Iface) {
	for _, f := range fs {
		f.Conn.Close()
	}
}
