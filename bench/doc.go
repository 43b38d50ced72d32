// Package bench is mtftpd's load generator: it plays many clients at once
// against a server — mtftpd or any other — and reports what they saw
// (completions, failures by cause, rates, latency percentiles, server
// misbehaviour such as one address handed to two clients).
//
// It holds the TFTP swarm (TFTPSwarm): N firmware-like clients (Profiles),
// each with its own socket, downloading one file from one server through
// tftp's public client, or (Engine "batch", Linux, lock-step) all of them
// over a few shared sockets with batched I/O and tftp's public codec,
// cheaper per block than the server they measure; and the DHCP storm
// (DHCPStorm): N simulated clients doing DISCOVER, OFFER, REQUEST, ACK (and RELEASE) over one
// socket; and the multicast swarm (MCastSwarm): N receivers of one
// multicast dialect (mtftp's public receivers) started together in one
// process. Compare reads two JSON reports (docs/bench-json.md).
//
// Every client loop is bounded in count and time and sends only to the
// target it was given.
//
// A DHCP storm is broadcast traffic: it must never run on a network you do
// not own. DHCPStorm refuses to start without an explicitly named
// interface, and mtftpd's own scripts and tests only run it inside the
// network-namespace lab (scripts/netlab.sh, internal/netlab). bench uses
// servers only through the wire (or a Transport in tests), never their
// internals.
package bench
