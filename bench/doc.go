// Package bench is mtftpd's load generator: it plays many clients at once
// against a server — mtftpd or any other — and reports what they saw
// (completions, failures by cause, rates, latency percentiles, server
// misbehaviour such as one address handed to two clients).
//
// So far it holds the DHCP storm (DHCPStorm): N simulated clients doing
// DISCOVER, OFFER, REQUEST, ACK (and RELEASE) over one socket. The TFTP
// and multicast swarms come later.
//
// A DHCP storm is broadcast traffic: it must never run on a network you do
// not own. DHCPStorm refuses to start without an explicitly named
// interface, and mtftpd's own scripts and tests only run it inside the
// network-namespace lab (scripts/netlab.sh, internal/netlab). bench uses
// servers only through the wire (or a Transport in tests), never their
// internals.
package bench
