package tftp

import (
	"sync/atomic"

	"github.com/mtftpd/mtftpd/internal/counters"
)

// Counters count the fate of every packet and transfer. All fields are
// updated atomically and may be read at any time; Snapshot gives a
// consistent-enough copy for metrics.
type Counters struct {
	RRQ            atomic.Uint64 // read requests accepted
	WRQ            atomic.Uint64 // write requests accepted
	NotFound       atomic.Uint64 // requests refused: file not found
	Denied         atomic.Uint64 // requests refused: access violation, bad name, writes disabled
	BadRequest     atomic.Uint64 // requests refused: malformed, bad mode
	SessionLimited atomic.Uint64 // requests refused: session limits
	RateLimited    atomic.Uint64 // requests dropped unanswered: over the per-client request rate
	DupRequest     atomic.Uint64 // a request repeated while its transfer runs: ignored
	BadPacket      atomic.Uint64 // unparsable or unexpected packets from a peer
	UnknownTID     atomic.Uint64 // packets from a foreign source to a transfer socket
	DupAck         atomic.Uint64 // stale/duplicate ACKs ignored
	GapAck         atomic.Uint64 // ACKs inside a window: resend from after them
	Timeouts       atomic.Uint64 // retransmission timer expiries
	Retransmits    atomic.Uint64 // DATA blocks (or OACKs) sent more than once
	// Spurious counts timer retransmissions (blocks or OACKs) whose first
	// copy was answered: the answer came sooner after the resend than
	// any round trip measured (rto.Estimator.Spurious). A lower bound.
	Spurious atomic.Uint64
	// LateAnswers counts timer expiries where the peer's answer was
	// already waiting (a starved server woke late): taken, not resent.
	LateAnswers  atomic.Uint64
	DataSent     atomic.Uint64 // DATA datagrams sent
	BytesSent    atomic.Uint64 // payload bytes sent (retransmits included)
	SendSyscalls atomic.Uint64 // syscalls that carried DATA
	SendErrors   atomic.Uint64 // failed sends
	Completed    atomic.Uint64 // transfers whose final block was acknowledged
	Unconfirmed  atomic.Uint64 // final ACK never came (counted as complete, docs/protocols.md §1.5)
	Probes       atomic.Uint64 // ERROR right after the OACK: a size probe (UEFI), not a failure
	Failed       atomic.Uint64 // transfers that ended any other way
	Active       atomic.Int64  // transfers in flight, confirmed or not
	Pending      atomic.Int64  // of those, requests whose client has not answered yet (unconfirmed)
	Evicted      atomic.Uint64 // unconfirmed requests ended to make room for newer ones
	Received     atomic.Uint64 // DATA bytes received by write transfers
	Multicast    atomic.Uint64 // read requests served by the multicast handler
}

// Snapshot returns every counter with its field name.
func (c *Counters) Snapshot() []counters.Value { return counters.Snapshot(c) }
