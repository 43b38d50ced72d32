package bench

import (
	"net/netip"
	"strings"
)

// The batch engine's shape (tftp_batch_linux.go), checked on every OS so
// a bad configuration is named before anything runs.
const (
	// batchClientsPerSocket: each socket's event loop serves about this
	// many clients; more sockets spread the receive queues (and, with
	// more loops than cores, nothing more).
	batchClientsPerSocket = 256
	// maxBatchSockets bounds the sockets (and event loops) of one swarm.
	maxBatchSockets = 16
)

// batchSockets is how many sockets the batch engine opens for clients
// over addrs source addresses (0: the kernel picks one address for all),
// or 0 when maxBatchSockets are not enough. Client i belongs to socket
// i mod S, and each of its downloads takes the least recently used of
// the addresses no other download of that socket holds (batchLoop): so
// every download has its own (local address, local port) pair, and a
// client's next download does not come from the pair of its last (a
// server may still hold that session: mtftpd takes a request from it as
// a repeat). Hence twice as many addresses per socket as clients: about
// one socket per batchClientsPerSocket clients, more when addresses are
// few. With fewer than 2 addresses each client has a socket of its own,
// opened anew for each download.
func batchSockets(clients, addrs int) int {
	s := clients
	if addrs >= 2 {
		s = max((clients+batchClientsPerSocket-1)/batchClientsPerSocket, (2*clients+addrs-1)/addrs, 1)
	}
	if s > maxBatchSockets {
		return 0
	}
	return s
}

// checkBatch reports through bad what the batch engine cannot play: it
// is lock-step (windowsize 1) IPv4 downloads, without the size probe.
func checkBatch(bad func(format string, a ...any), c TFTPSwarm) {
	if !batchSupported {
		bad("Engine: %s is not supported on this OS (Linux only: recvmmsg, sendmmsg, IP_PKTINFO)", EngineBatch)
		return
	}
	if c.Profile.WindowSize > 1 {
		bad("Engine: %s plays lock-step clients only; profile %s asks windowsize %d (use the %s engine)",
			EngineBatch, c.Profile.Name, c.Profile.WindowSize, EngineGoroutine)
	}
	if c.Profile.Probe {
		bad("Engine: %s does not play the tsize probe of profile %s (use the %s engine)", EngineBatch, c.Profile.Name, EngineGoroutine)
	}
	if host, _, err := splitTarget(c.Target); err == nil {
		if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil && !a.Unmap().Is4() {
			bad("Engine: %s is IPv4 only; target %s is IPv6", EngineBatch, c.Target)
		}
	}
	for _, a := range c.SourceAddrs {
		if !a.Unmap().Is4() {
			bad("Engine: %s is IPv4 only; source address %s is not", EngineBatch, a)
			break
		}
	}
	if batchSockets(c.Clients, len(c.SourceAddrs)) == 0 {
		bad("Engine: %s gives each download its own (address, port) over at most %d sockets: %d clients need at least %d source addresses, have %d (--source-addrs)",
			EngineBatch, maxBatchSockets, c.Clients, (2*c.Clients+maxBatchSockets-1)/maxBatchSockets, len(c.SourceAddrs))
	}
}
