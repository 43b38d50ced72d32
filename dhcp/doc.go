// Package dhcp is mtftpd's minimal DHCP server: full DHCP for a lab or a
// reimaging room (Mode "server") or ProxyDHCP beside someone else's DHCP
// server (Mode "proxy", ports 67 and 4011). Its one job is to give network
// boot clients — PXE ROMs, UEFI PXE and HTTP Boot firmware, iPXE — an
// address and the right boot file (docs/protocols.md §8, §9). Server6
// (v6*.go) does the same over DHCPv6 (§14): addresses from one range and
// the boot URL by the same rules, in a lease table and journal of the
// same kind.
//
// The protocol core is Server.Handle: a request, where it came from and
// the time in; the reply and where it goes out. It touches no socket, so
// table tests and the fuzzer drive it directly. Serve wraps it in one read
// loop per socket (no goroutine per packet) and sends the replies.
//
// It uses github.com/insomniacslk/dhcp/dhcpv4 as a codec only (FromBytes,
// ToBytes, the option map); its server4 allocates a goroutine and buffers
// per packet and cannot tell us the receiving interface.
//
// What this package must never do:
//   - hand a client an address another client holds, or the same free
//     address to two clients at once (offers reserve their address);
//   - send an ACK for a lease that is not yet on disk when LeaseFile is set;
//   - empty a lease file it cannot parse (it is set aside and reported);
//   - hand an iPXE client the iPXE binary again (chain-load loop,
//     docs/protocols.md §9.9);
//   - answer a relayed request (giaddr set) unless giaddr and its source
//     are both listed in Relays, or send an INFORM's answer anywhere but
//     to its source (docs/security.md);
//   - let the work of one request grow with the pool's size (pool.go);
//   - assign addresses, NAK or send lease options in proxy mode;
//   - answer a DHCPv6 message from anything but a link-local source,
//     or send an answer larger than replyFactor times its request;
//   - send PXE MTFTP sub-options (43.1–43.5) to anything but a BIOS PXE
//     ROM (arch 0, not iPXE) — UEFI drops such offers
//     (docs/protocols.md §7.1).
package dhcp
