package tftp

import (
	"bytes"
	"time"
)

// receiver is the receiving side's position in a transfer, written once for
// the client's download (Client.get) and the server's upload
// (writeSession): for each DATA block it says whether the block is
// delivered, held ahead of a gap or a duplicate, and when an ACK goes out.
// Blocks are numbered with 64-bit counters from 1; the answer to the
// request (OACK, or the server's ACK 0 of a WRQ) is block 0. Pure logic,
// like window (the sender's state): no I/O and no clock; the caller passes
// the time. docs/design.md, "The send window and the receive state", has
// the table of verdicts; the rules:
//
//   - The last block of each window is ACKed, and so is the final (short
//     or empty) block (docs/protocols.md §3.4 rule 2, §1.5).
//   - A block ahead of a gap is held and the gap is reported — an ACK of
//     the last block held in order, rule 2 — only if it outlives the
//     reorder hold, once per position: a block merely reordered on the
//     path costs no resend of the window.
//   - A duplicate is re-ACKed only at a window boundary (everything held
//     in order is ACKed, so the sender resent because our ACK was lost),
//     once per position. Mid-window a duplicate is the network's doing,
//     and an ACK there would read as a gap report and make the sender
//     resend (the window form of Sorcerer's Apprentice, §1.6).
//   - A wire number stands for the one block in [have, have+W] that has
//     it, across the rollover after 65535 (§4).
type receiver struct {
	size     uint64 // W, blocks per window (1 = RFC 1350 lock-step)
	blksize  int
	rollover uint16 // the block number after 65535: 0 or 1 (§4)
	// maxHeld caps the memory held ahead of a gap, each block counted
	// as its payload plus heldBlockCost; 0 = no cap but the window's. A
	// block past it is dropped and comes again after the gap report.
	maxHeld int

	have     uint64            // highest block received in order
	acked    uint64            // block of the last ACK sent
	final    bool              // the final block was delivered
	ahead    map[uint64][]byte // copies of the blocks held ahead of a gap
	held     int               // bytes counted for ahead (maxHeld)
	gapAt    time.Time         // when the current gap was first seen; zero: no gap
	gapAcked bool              // the current gap was reported
	dupAcked bool              // a duplicate was re-ACKed at this position

	// ready holds the payloads a deliver verdict put in order, blocks
	// readyFrom, readyFrom+1, …: the first is the payload passed to
	// onData, so the caller writes them before it reads again.
	ready     [][]byte
	readyFrom uint64
}

// dataVerdict is what a DATA block means for the receiver.
type dataVerdict int

const (
	dataBad     dataVerdict = iota // larger than blksize: not a DATA of this transfer
	dataDup                        // already held, or outside the window: ignore
	dataReAck                      // a duplicate at a window boundary: repeat the ACK (ours was lost)
	dataHeld                       // ahead of a gap: held until the gap fills or is reported
	dataDropped                    // ahead of a gap, but the hold is full: dropped
	dataDeliver                    // in order: write ready; no ACK yet (mid-window)
	dataAck                        // in order, and a window is complete: write ready, then ACK
	dataFinal                      // the final block is in order: write ready, then ACK; done
)

var verdictNames = [...]string{"bad", "dup", "re-ack", "held", "dropped", "deliver", "ack", "final"}

func (v dataVerdict) String() string { return verdictNames[v] }

// onData classifies DATA block wire with its payload, received at now, and
// moves the position on when the block is news.
func (r *receiver) onData(wire uint16, payload []byte, now time.Time) dataVerdict {
	r.ready = r.ready[:0]
	if len(payload) > r.blksize {
		return dataBad
	}
	blk, ok := unwrapBlock(wire, r.have, r.have+r.size, r.rollover)
	if r.final || !ok || blk == r.have {
		if !r.final && !r.dupAcked && r.have == r.acked {
			r.dupAcked = true
			return dataReAck
		}
		return dataDup
	}
	if blk != r.have+1 {
		return r.hold(blk, payload, now)
	}
	r.readyFrom = blk
	r.advance(payload)
	for !r.final {
		p, ok := r.ahead[r.have+1]
		if !ok {
			break
		}
		delete(r.ahead, r.have+1)
		r.held -= len(p) + heldBlockCost
		r.advance(p)
	}
	// Blocks still held are ahead of a new gap; after the final block
	// they are not blocks of the file at all.
	if r.final {
		clear(r.ahead)
		r.held = 0
	}
	r.gapAt = time.Time{}
	if len(r.ahead) > 0 {
		r.gapAt = now
	}
	switch {
	case r.final:
		return dataFinal
	case r.have-r.acked >= r.size:
		return dataAck
	}
	return dataDeliver
}

// advance delivers the next block in order.
func (r *receiver) advance(p []byte) {
	r.ready = append(r.ready, p)
	r.have++
	r.gapAcked, r.dupAcked = false, false
	r.final = len(p) < r.blksize
}

// hold keeps a copy of block blk, ahead of a gap, and starts the gap's
// clock if it is new.
func (r *receiver) hold(blk uint64, payload []byte, now time.Time) dataVerdict {
	if _, ok := r.ahead[blk]; ok {
		return dataDup
	}
	if r.gapAt.IsZero() {
		r.gapAt = now
	}
	cost := len(payload) + heldBlockCost
	if r.maxHeld > 0 && r.held+cost > r.maxHeld {
		return dataDropped
	}
	if r.ahead == nil {
		r.ahead = make(map[uint64][]byte)
	}
	r.ahead[blk] = bytes.Clone(payload)
	r.held += cost
	return dataHeld
}

// heldBlockCost is what a held block takes beyond its payload: its map
// entry (key and slice header, with the table's slack) and the rounding
// of its copy, about 95 bytes measured for 1-byte blocks
// (TestReceiverHoldTinyBlocks). Without it, blocks of blksize 8 in a
// window of 65,535 held megabytes under a 256 KiB cap.
const heldBlockCost = 96

// gapDue is when the open gap is to be reported, hold after it was first
// seen; zero when there is none or it was reported.
func (r *receiver) gapDue(hold time.Duration) time.Time {
	if r.gapAt.IsZero() || r.gapAcked {
		return time.Time{}
	}
	return r.gapAt.Add(hold)
}

// gapReport reports whether the open gap has outlived hold at now, so the
// caller ACKs the last block held in order (RFC 7440; docs/protocols.md
// §3.4 rule 2). It says so once per position.
func (r *receiver) gapReport(now time.Time, hold time.Duration) bool {
	due := r.gapDue(hold)
	if due.IsZero() || now.Before(due) {
		return false
	}
	r.gapAcked = true
	return true
}

// ack records that the caller sends an ACK of the last block held in order
// (after a verdict that asks for one, a gap report or its own timeout) and
// returns the block's wire number.
func (r *receiver) ack() uint16 {
	r.acked = r.have
	return wireBlock(r.have, r.rollover)
}

// reorderHold is how long a gap may stay open before the receiver reports
// it: a quarter of the retransmission timeout, 2 ms at least and 50 ms at
// most. Datagrams reordered on the path (link aggregation, the lab's
// jitter) arrive within it, so they cost no resend of the window; a block
// really lost is reported this much later than at once.
func reorderHold(rto time.Duration) time.Duration {
	return min(max(rto/4, 2*time.Millisecond), 50*time.Millisecond)
}
