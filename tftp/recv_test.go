package tftp

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// rxStep is one event for the receive state: a DATA block (its verdict
// checked), a check of the gap timer at a time, or the caller's own
// retransmission timeout (an ACK of where it is).
type rxStep struct {
	kind  byte // 'd' DATA, 'g' gap timer, 't' timeout
	wire  uint16
	size  int           // payload bytes; rxBS = a full block
	at    time.Duration // since the start
	want  dataVerdict   // 'd'
	gap   bool          // 'g': the gap is reported
	ready []uint64      // 'd': the blocks delivered, in order (nil: none)
}

const (
	rxBS   = 8 // blksize of the table's transfers
	rxHold = 10 * time.Millisecond
)

func rxData(wire uint16, at time.Duration, want dataVerdict, ready ...uint64) rxStep {
	return rxStep{kind: 'd', wire: wire, size: rxBS, at: at, want: want, ready: ready}
}

func rxShort(wire uint16, size int, at time.Duration, want dataVerdict, ready ...uint64) rxStep {
	return rxStep{kind: 'd', wire: wire, size: size, at: at, want: want, ready: ready}
}

func rxGap(at time.Duration, reported bool) rxStep {
	return rxStep{kind: 'g', at: at, gap: reported}
}

func rxTimeout() rxStep { return rxStep{kind: 't'} }

// rxPayload is block wire's payload: its wire number in every byte, so a
// delivered payload shows which block it came from.
func rxPayload(wire uint16, size int) []byte { return bytes.Repeat([]byte{byte(wire)}, size) }

// TestReceiver drives the receive state through every verdict: windows
// and their ACKs, the final short or empty block, reordering within and
// past the hold, duplicates at and inside window boundaries, a full hold,
// and the rollover after 65535 to 0 and to 1. The caller's part is
// played as Client.get and writeSession.run play it: an ACK after every
// verdict that asks for one, after a gap report and after a timeout.
func TestReceiver(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name     string
		win      uint64
		rollover uint16
		maxHeld  int
		start    uint64 // blocks already received and ACKed
		steps    []rxStep
		acks     []uint16 // wire numbers ACKed, in order
		have     uint64
	}{
		{name: "lock-step", win: 1, steps: []rxStep{
			rxData(1, 0, dataAck, 1),
			rxData(2, 0, dataAck, 2),
			rxShort(3, 5, 0, dataFinal, 3),
		}, acks: []uint16{1, 2, 3}, have: 3},
		{name: "empty final block", win: 1, steps: []rxStep{
			rxData(1, 0, dataAck, 1),
			rxShort(2, 0, 0, dataFinal, 2),
		}, acks: []uint16{1, 2}, have: 2},
		{name: "window of 4: ACK at each window's end", win: 4, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1), rxData(2, 0, dataDeliver, 2), rxData(3, 0, dataDeliver, 3),
			rxData(4, 0, dataAck, 4),
			rxData(5, 0, dataDeliver, 5), rxData(6, 0, dataDeliver, 6), rxData(7, 0, dataDeliver, 7),
			rxData(8, 0, dataAck, 8),
			rxShort(9, 1, 0, dataFinal, 9),
		}, acks: []uint16{4, 8, 9}, have: 9},
		{name: "final block mid-window", win: 8, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1),
			rxShort(2, 3, 0, dataFinal, 2),
			rxData(2, 0, dataDup),
		}, acks: []uint16{2}, have: 2},
		{name: "larger than blksize", win: 4, steps: []rxStep{
			rxShort(1, rxBS+1, 0, dataBad),
			rxData(1, 0, dataDeliver, 1),
		}, have: 1},
		{name: "duplicate at a window boundary: one re-ACK per position", win: 1, steps: []rxStep{
			rxData(1, 0, dataAck, 1),
			rxData(1, 0, dataReAck),
			rxData(1, 0, dataDup),
			rxData(2, 0, dataAck, 2),
			rxData(2, 0, dataReAck),
			rxData(1, 0, dataDup),
		}, acks: []uint16{1, 1, 2, 2}, have: 2},
		{name: "repeated answer before any DATA: re-ACK 0 once", win: 4, steps: []rxStep{
			rxData(0, 0, dataReAck),
			rxData(0, 0, dataDup),
			rxData(1, 0, dataDeliver, 1),
		}, acks: []uint16{0}, have: 1},
		{name: "duplicate mid-window: no ACK (it would read as a gap report)", win: 4, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1), rxData(2, 0, dataDeliver, 2),
			rxData(2, 0, dataDup), rxData(1, 0, dataDup),
			rxData(3, 0, dataDeliver, 3), rxData(4, 0, dataAck, 4),
		}, acks: []uint16{4}, have: 4},
		{name: "window resent after a lost ACK: the boundary re-ACKed once", win: 4, start: 4, steps: []rxStep{
			rxData(1, 0, dataReAck), rxData(2, 0, dataDup), rxData(3, 0, dataDup), rxData(4, 0, dataDup),
		}, acks: []uint16{4}, have: 4},
		{name: "outside the window: ignored", win: 4, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1),
			rxData(6, 0, dataDup), // beyond have+W
			rxData(2, 0, dataDeliver, 2),
		}, have: 2},
		{name: "reordered within the hold: held, no ACK, no resend", win: 4, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1),
			rxData(3, 1*ms, dataHeld),
			rxData(3, 2*ms, dataDup), // a copy of a held block
			rxGap(1*ms+rxHold-1, false),
			rxData(2, 1*ms+rxHold-1, dataDeliver, 2, 3),
			rxGap(time.Second, false),
			rxData(4, time.Second, dataAck, 4),
		}, acks: []uint16{4}, have: 4},
		{name: "reordered to the window's end", win: 4, steps: []rxStep{
			rxData(2, 0, dataHeld), rxData(3, 0, dataHeld), rxData(4, 0, dataHeld),
			rxData(1, 0, dataAck, 1, 2, 3, 4),
		}, acks: []uint16{4}, have: 4},
		{name: "gap past the hold: reported once per position", win: 4, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1),
			rxData(3, 1*ms, dataHeld),
			rxGap(1*ms+rxHold-1, false),
			rxGap(1*ms+rxHold, true), // ACK 1: the sender resends from 2
			rxGap(time.Second, false),
			rxData(4, time.Second, dataHeld),
			rxGap(2*time.Second, false),
			// The resent window 2..5: 2 fills the gap, 3 and 4 come again.
			rxData(2, 2*time.Second, dataDeliver, 2, 3, 4),
			rxData(3, 2*time.Second, dataDup),
			rxData(4, 2*time.Second, dataDup),
			rxData(5, 2*time.Second, dataAck, 5), // the window after ACK 1 ends at 5
		}, acks: []uint16{1, 5}, have: 5},
		{name: "a gap behind the one filled starts its own hold", win: 8, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1),
			rxData(3, 0, dataHeld), rxData(5, 0, dataHeld),
			rxData(2, 5*ms, dataDeliver, 2, 3),
			rxGap(5*ms+rxHold-1, false), // 4 missing since 5 ms, not since 0
			rxGap(5*ms+rxHold, true),
			rxData(4, 20*ms, dataDeliver, 4, 5),
			rxGap(time.Second, false),
		}, acks: []uint16{3}, have: 5},
		{name: "the final block held ahead", win: 4, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1),
			rxShort(3, 2, 0, dataHeld),
			rxData(4, 0, dataHeld), // past the final block: never part of the file
			rxData(2, 0, dataFinal, 2, 3),
			rxGap(time.Second, false),
		}, acks: []uint16{3}, have: 3},
		{name: "hold full: dropped, still reported", win: 8, maxHeld: 2 * (rxBS + heldBlockCost), steps: []rxStep{
			rxData(1, 0, dataDeliver, 1),
			rxData(3, 0, dataHeld), rxData(4, 0, dataHeld),
			rxData(5, 0, dataDropped),
			rxGap(rxHold, true),
			rxData(2, rxHold, dataDeliver, 2, 3, 4),
			rxData(5, rxHold, dataDeliver, 5), // 4 blocks since ACK 1, in a window of 8
		}, acks: []uint16{1}, have: 5},
		{name: "timeout ACK moves the window's start", win: 4, steps: []rxStep{
			rxData(1, 0, dataDeliver, 1), rxData(2, 0, dataDeliver, 2),
			rxTimeout(), // ACK 2: the sender resends from 3
			rxData(2, 0, dataReAck),
			rxData(3, 0, dataDeliver, 3), rxData(4, 0, dataDeliver, 4), rxData(5, 0, dataDeliver, 5),
			rxData(6, 0, dataAck, 6),
		}, acks: []uint16{2, 2, 6}, have: 6},
		{name: "rollover to 0 (default)", win: 4, start: 65534, steps: []rxStep{
			rxData(65535, 0, dataDeliver, 65535),
			rxData(0, 0, dataDeliver, 65536),
			rxData(1, 0, dataDeliver, 65537),
			rxData(2, 0, dataAck, 65538),
			rxData(0, 0, dataReAck), // block 65536 again, at the boundary after ACK 65538
		}, acks: []uint16{2, 2}, have: 65538},
		{name: "rollover to 1", win: 4, rollover: 1, start: 65534, steps: []rxStep{
			rxData(65535, 0, dataDeliver, 65535),
			rxData(0, 0, dataDup), // no block is numbered 0 after the first wrap
			rxData(1, 0, dataDeliver, 65536),
			rxData(2, 0, dataDeliver, 65537),
			rxData(3, 0, dataAck, 65538),
		}, acks: []uint16{3}, have: 65538},
		{name: "reordered across the rollover", win: 4, start: 65534, steps: []rxStep{
			rxData(0, 0, dataHeld), rxData(1, 0, dataHeld),
			rxData(65535, 1*ms, dataDeliver, 65535, 65536, 65537),
			rxShort(2, 0, 1*ms, dataFinal, 65538),
		}, acks: []uint16{2}, have: 65538},
		{name: "lock-step rollover, re-ACK of block 65535", win: 1, start: 65534, steps: []rxStep{
			rxData(65535, 0, dataAck, 65535),
			rxData(65535, 0, dataReAck),
			rxData(0, 0, dataAck, 65536),
			rxShort(1, 7, 0, dataFinal, 65537),
		}, acks: []uint16{65535, 65535, 0, 1}, have: 65537},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			r := receiver{size: tc.win, blksize: rxBS, rollover: tc.rollover, maxHeld: tc.maxHeld, have: tc.start, acked: tc.start}
			var acks []uint16
			var got []uint64
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				switch s.kind {
				case 't':
					acks = append(acks, r.ack())
				case 'g':
					if rep := r.gapReport(now, rxHold); rep != s.gap {
						t.Fatalf("step %d: gap reported %v at %v, want %v", i, rep, s.at, s.gap)
					}
					if s.gap {
						acks = append(acks, r.ack())
					}
				case 'd':
					v := r.onData(s.wire, rxPayload(s.wire, s.size), now)
					if v != s.want {
						t.Fatalf("step %d: DATA %d: %v, want %v", i, s.wire, v, s.want)
					}
					var blocks []uint64
					for k, p := range r.ready {
						blk := r.readyFrom + uint64(k)
						if len(p) > 0 && p[0] != byte(wireBlock(blk, tc.rollover)) {
							t.Fatalf("step %d: block %d delivered with block %d's payload", i, blk, p[0])
						}
						blocks = append(blocks, blk)
					}
					if fmt.Sprint(blocks) != fmt.Sprint(s.ready) {
						t.Fatalf("step %d: DATA %d delivered %v, want %v", i, s.wire, blocks, s.ready)
					}
					got = append(got, blocks...)
					if v == dataReAck || v == dataAck || v == dataFinal {
						acks = append(acks, r.ack())
					}
				}
			}
			if fmt.Sprint(acks) != fmt.Sprint(tc.acks) {
				t.Fatalf("ACKs sent %v, want %v", acks, tc.acks)
			}
			if r.have != tc.have {
				t.Fatalf("have %d, want %d", r.have, tc.have)
			}
			for k := 1; k < len(got); k++ {
				if got[k] != got[k-1]+1 {
					t.Fatalf("delivered out of order: %v", got)
				}
			}
		})
	}
}

// TestReceiverHoldBound: however blocks arrive, the receive state never
// holds more than maxHeld bytes (payloads and heldBlockCost each), nor a
// block outside the window.
func TestReceiverHoldBound(t *testing.T) {
	r := receiver{size: 64, blksize: 512, maxHeld: 4 * 512}
	now := time.Unix(1, 0)
	for i := range 10_000 {
		wire := uint16(i*7919%200 + 2) // never block 1: the gap stays open
		r.onData(wire, make([]byte, 512), now)
		if r.held > r.maxHeld || len(r.ahead) > 4 {
			t.Fatalf("after %d blocks: %d bytes in %d held blocks, cap %d", i+1, r.held, len(r.ahead), r.maxHeld)
		}
		for b := range r.ahead {
			if b <= r.have+1 || b > r.have+r.size {
				t.Fatalf("held block %d outside the window after %d", b, r.have)
			}
		}
	}
}

// FuzzReceiver feeds the receive state any sequence of DATA blocks near
// its position (behind, in and past the window, full and short, across
// the rollover) with gap reports and ACKs between them: blocks come out
// in order, each with its own payload, at most maxHeld bytes are held and
// only inside the window, nothing comes after the final block, and the
// ACKed block never passes the one held in order.
func FuzzReceiver(f *testing.F) {
	f.Add(uint16(0), uint8(4), false, []byte{9, 11, 10, 12, 0x80 | 13})
	f.Add(uint16(65530), uint8(8), true, []byte{9, 9, 10, 0xc0, 12, 11, 14, 13, 0x80 | 15})
	f.Fuzz(func(t *testing.T, start uint16, win uint8, ro bool, script []byte) {
		r := receiver{size: uint64(win%16) + 1, blksize: rxBS, maxHeld: 3 * rxBS, have: uint64(start), acked: uint64(start)}
		if ro {
			r.rollover = 1
		}
		next := r.have + 1
		now := time.Unix(1, 0)
		for _, b := range script {
			now = now.Add(time.Millisecond)
			if b&0xc0 == 0xc0 { // a gap report check, or the caller's timeout
				if r.gapReport(now, rxHold) || b&1 == 1 {
					r.ack()
				}
				continue
			}
			// Block have-8 .. have+55: behind, in and past the window.
			blk := int64(r.have) + int64(b&0x3f) - 8
			if blk < 0 {
				continue
			}
			size := rxBS
			if b&0x80 != 0 {
				size = int(b) % rxBS
			}
			v := r.onData(wireBlock(uint64(blk), r.rollover), rxPayload(wireBlock(uint64(blk), r.rollover), size), now)
			if len(r.ready) > 0 {
				if r.readyFrom != next {
					t.Fatalf("delivered from block %d, want %d", r.readyFrom, next)
				}
				for k, p := range r.ready {
					if len(p) > 0 && p[0] != byte(wireBlock(next+uint64(k), r.rollover)) {
						t.Fatalf("block %d delivered with another block's payload", next+uint64(k))
					}
				}
				next += uint64(len(r.ready))
			}
			if next != r.have+1 {
				t.Fatalf("have %d after delivering up to %d", r.have, next-1)
			}
			held := 0
			for blk, p := range r.ahead {
				held += len(p) + heldBlockCost
				if blk <= r.have+1 || blk > r.have+r.size {
					t.Fatalf("block %d held outside the window after %d", blk, r.have)
				}
			}
			if held != r.held || held > r.maxHeld {
				t.Fatalf("holding %d bytes, counted %d, cap %d", held, r.held, r.maxHeld)
			}
			if r.acked > r.have {
				t.Fatalf("ACKed %d past %d", r.acked, r.have)
			}
			if v == dataReAck || v == dataAck || v == dataFinal {
				r.ack()
			}
			if r.final && len(r.ahead) > 0 {
				t.Fatal("blocks held after the final one")
			}
		}
	})
}

// TestReceiverHoldTinyBlocks: an uploader with max_windowsize raised to
// 65535 negotiates blksize 8 (RFC 2348's least) and sends 1-byte blocks
// ahead of a gap it never fills. The hold must bound the memory they
// take, not only their payload bytes: before, 65,534 blocks counted 64
// KiB against the 256 KiB cap while their copies and map entries took
// megabytes, per upload.
func TestReceiverHoldTinyBlocks(t *testing.T) {
	r := receiver{size: MaxWindowSize, blksize: 8, maxHeld: uploadHoldBytes}
	now := time.Unix(1, 0)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for b := 2; b <= MaxWindowSize; b++ { // never block 1: the gap stays open
		r.onData(uint16(b), []byte{byte(b)}, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if grown > 2*uploadHoldBytes {
		t.Errorf("%d blocks held take %d bytes of heap, cap %d", len(r.ahead), grown, uploadHoldBytes)
	}
	runtime.KeepAlive(&r)
}
