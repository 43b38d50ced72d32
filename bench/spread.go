package bench

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/mtftpd/mtftpd/tftp"
)

// spreadBase is the first address of an automatic loopback spread: away
// from 127.0.0.1 (the server's usual address) and 127.0.1.1 (Debian's
// hostname entry), so the clients are told apart from anything else.
var spreadBase = netip.AddrFrom4([4]byte{127, 77, 0, 1})

// LoopbackSpread gives a swarm of n clients aimed at a loopback host one
// source address each, 127.77.0.1 onwards. A server caps transfers per
// client address (mtftpd: tftp.max_per_client, 16), so a swarm from one
// address measures that cap, not the server: 20 clients lost 4 downloads
// to "address busy" against the default settings. It returns nil when
// host is not an IPv4 loopback address, or the system cannot send from
// any 127.0.0.0/8 address without configuring it (loopbackAnyAddr).
func LoopbackSpread(host string, n int) []netip.Addr {
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() || !a.IsLoopback() || !loopbackAnyAddr || n < 2 {
		return nil
	}
	out := make([]netip.Addr, 0, min(n, MaxTFTPClients))
	for next := spreadBase; len(out) < cap(out); next = next.Next() {
		out = append(out, next)
	}
	return out
}

// spreadText describes a spread the swarm chose itself ("" when the
// caller gave the addresses, or none were chosen).
func spreadText(given, used []netip.Addr) string {
	if len(given) > 0 || len(used) == 0 {
		return ""
	}
	return fmt.Sprintf("loopback target: %d clients spread over %s-%s (give --source-addrs to choose)", len(used), used[0], used[len(used)-1])
}

// LimitHints explains failures that come from the server's limits rather
// than its speed: which limit refused the downloads, and what to change.
func (r TFTPReport) LimitHints() []string {
	var out []string
	if n := r.Errors[ErrKindBusyAddress]; n > 0 {
		addrs := "one address"
		if r.SourceAddrs > 1 {
			addrs = fmt.Sprintf("%d addresses", r.SourceAddrs)
		}
		out = append(out, fmt.Sprintf("%d downloads refused by the server's limit per client address (mtftpd: tftp.max_per_client, default %d): %d clients came from %s; spread them with --source-addrs",
			n, tftp.DefaultMaxPerClient, r.Clients, addrs))
	}
	if n := r.Errors[ErrKindBusyServer]; n > 0 {
		out = append(out, fmt.Sprintf("%d downloads refused by the server's limit of sessions (mtftpd: tftp.max_sessions, default %d)",
			n, tftp.DefaultMaxSessions))
	}
	return out
}
