package tftp

// window is the sender's position in a read transfer (RFC 7440 §3–6,
// docs/protocols.md §3.4). Blocks are numbered with 64-bit counters from 1; the
// OACK, when one was sent, counts as block 0. Pure logic: no I/O, no time.
type window struct {
	size  uint64 // W, blocks per window (1 = RFC 1350 lock-step)
	final uint64 // number of the last (short or empty) block
	acked uint64 // highest block acknowledged
	sent  uint64 // highest block sent
}

type ackVerdict int

const (
	ackStale  ackVerdict = iota // at or below the last acknowledged block, or beyond what was sent: ignore
	ackWindow                   // the whole window arrived: send the next one
	ackGap                      // a block inside the window is missing: resend from the block after the ACK
	ackDone                     // the final block is acknowledged
)

// next returns the blocks of the window that starts right after the last
// acknowledged block and marks them sent. Both a timeout and an ACK restart
// here (RFC 7440; docs/protocols.md §3.4 rules 3 and 4).
func (w *window) next() (from, to uint64) {
	from = w.acked + 1
	to = min(w.acked+w.size, w.final)
	w.sent = to
	return from, to
}

// onAck classifies an ACK already mapped to its 64-bit block number, and
// moves acked forward when it is news. A duplicate ACK never causes a send
// of its own (Sorcerer's Apprentice, RFC 1123 §4.2.3.1): stale ACKs are
// ignored, and a gap ACK rewinds only to blocks after it, once, because
// acked moves with it and the same ACK is stale the next time.
func (w *window) onAck(n uint64) ackVerdict {
	if n <= w.acked || n > w.sent {
		return ackStale
	}
	w.acked = n
	switch {
	case n == w.final:
		return ackDone
	case n == w.sent:
		return ackWindow
	default:
		return ackGap
	}
}

// BlockCount is the number of DATA blocks of a size-byte file: the last one
// is shorter than blksize, empty when size is a multiple of it (RFC 1350 §6).
func BlockCount(size int64, blksize int) uint64 {
	return uint64(size/int64(blksize)) + 1
}
