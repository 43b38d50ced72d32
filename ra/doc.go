// Package ra answers IPv6 router solicitations on boot interfaces with a
// router advertisement that says "there is no IPv6 here": M=0, O=0, router
// lifetime 0 and no prefix. iPXE's `dhcp`/`ifconf` waits for every
// configurator, and without a router on the link its IPv6 step retries router
// solicitations for about 3.9 s (16 s more when M or O is set and no DHCPv6
// server answers) before the boot goes on (docs/protocols.md §13). Such an
// advertisement ends that step at once.
//
// On an interface where mtftpd's DHCPv6 server runs (Iface.DHCPv6) the
// advertisement says instead M=1, O=1 with the DHCPv6 prefix on-link and
// not autonomous (still lifetime 0: not a default router): iPXE and the
// firmware then ask DHCPv6 for an address and reach the server on the
// link (docs/protocols.md §14). The prefix lives as long as a DHCPv6
// lease, and a final advertisement with its lifetimes 0 withdraws it
// when the advertiser shuts down or stops for another router that does
// not carry it.
//
// It must never compete with a real router: on each interface it first
// listens (and solicits) for a while, answers nothing then, and stops for
// good on that interface as soon as an advertisement from any other address
// is seen. It never advertises a default route, DNS, an autonomous prefix
// or anything else (a prefix only where DHCPv6 serves it), and never keeps
// state per sender: a hostile LAN can make it send at most one
// advertisement per interface per MinInterval.
package ra
