package mtftp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Partial downloads (GetRanges, docs/native-multicast.md "Partial
// downloads"): the receiver names the stripes it needs with WANT packets,
// holds each stripe in a buffer until it is complete (or rebuilt), hands
// the wanted bytes to its caller and frees the buffer. Stripes it does not
// want count as complete from the start, so they are never asked for.

// setupPartial marks the stripes that hold no wanted byte complete and
// sends the first WANTs.
func (rc *recvState) setupPartial() error {
	g := rc.g
	var end int64
	for i, r := range rc.ranges {
		if r.Off < end || r.Len <= 0 || r.Off+r.Len > g.size {
			return fmt.Errorf("mtftp: range %d (%d+%d) is empty, out of order or past the file's %d bytes", i, r.Off, r.Len, g.size)
		}
		end = r.Off + r.Len
	}
	rc.wanted = make([]bool, g.stripes)
	stripeBytes := int64(g.k) * int64(g.shard)
	for _, r := range rc.ranges {
		for s := r.Off / stripeBytes; s <= (r.Off+r.Len-1)/stripeBytes; s++ {
			rc.wanted[s] = true
		}
	}
	for s := range g.stripes {
		if !rc.wanted[s] && g.dataIn(s) > 0 {
			rc.dataHave[s] = uint16(g.dataIn(s))
			rc.complete++
		}
	}
	rc.bufs = map[int64][]byte{}
	rc.segFrom = map[uint32]uint64{}
	rc.sendWants()
	return nil
}

// sendWants sends a WANT for every segment of stripes that holds a wanted,
// incomplete stripe and has no acknowledgement yet (called again every
// status round until it has).
func (rc *recvState) sendWants() {
	g := rc.g
	bits := make([]byte, maxWantBits/8)
	var b []byte
	for first := int64(0); first < g.stripes; first += maxWantBits {
		if _, acked := rc.segFrom[uint32(first)]; acked {
			continue
		}
		n := min(int64(maxWantBits), g.stripes-first)
		clear(bits)
		any := false
		for i := range n {
			s := first + i
			if rc.wanted[s] && rc.dataHave[s] < uint16(g.dataIn(s)) {
				bits[i/8] |= 1 << (i % 8)
				any = true
			}
		}
		if !any {
			continue
		}
		b = appendWant(b[:0], &wantPkt{ID: rc.sess.ID, Token: rc.tok, First: uint32(first), Count: uint32(n), Bits: bits})
		rc.ctl.WriteToUDPAddrPort(b, rc.srv)
	}
}

// wantAcked records from which carousel position the server serves a
// segment's stripes.
//
// Only an answer to a WANT this receiver sent counts — an aligned segment
// of the right length, not acknowledged yet — and only with a position
// within a pass of where the stream is: a forged one must neither grow
// the map nor push a segment out of reach (never NAKed, never asked again).
func (rc *recvState) wantAcked(b []byte) {
	p, err := parseWantAck(b)
	if err != nil || p.ID != rc.sess.ID || rc.segFrom == nil {
		return
	}
	g := rc.g
	if p.First%maxWantBits != 0 || int64(p.First) >= g.stripes || int64(p.Count) != min(maxWantBits, g.stripes-int64(p.First)) {
		return
	}
	if _, acked := rc.segFrom[p.First]; acked || p.From > rc.curSeq+uint64(g.stripes) {
		return
	}
	rc.segFrom[p.First] = p.From
}

// passedPartial reports whether stripe s has gone by in the carousel since
// the server took its WANT: then a missing shard of it is lost, not late.
func (rc *recvState) passedPartial(s int64) bool {
	from, ok := rc.segFrom[uint32(s/maxWantBits*maxWantBits)]
	if !ok {
		return false
	}
	stripes := uint64(rc.g.stripes)
	pos := from + (uint64(s)+stripes-from%stripes)%stripes
	return pos < rc.curSeq
}

// newSessionPartial starts over in another session of the file (a move or
// a new session after the old one was lost): its positions are its own,
// and it must be told what is still wanted.
func (rc *recvState) newSessionPartial() {
	clear(rc.segFrom)
	rc.curSeq = 0
	rc.sendWants()
}

// stripeBuf returns stripe st's buffer (partial downloads), allocating it
// on first use; nil when the budget is spent.
func (rc *recvState) stripeBuf(st int64) []byte {
	if b, ok := rc.bufs[st]; ok {
		return b
	}
	g := rc.g
	full := g.k * g.shard
	if rc.bufBytes+int64(full) > partialBudget {
		return nil
	}
	var b []byte
	if n := len(rc.free); n > 0 {
		b, rc.free = rc.free[n-1], rc.free[:n-1]
	} else {
		b = make([]byte, full)
	}
	rc.bufs[st] = b
	rc.bufBytes += int64(full)
	return b
}

// shardBytes returns where data shard i of stripe st lives: in the mapped
// file, or in the stripe's buffer for a partial download (nil when the
// budget is spent).
func (rc *recvState) shardBytes(st int64, i int) []byte {
	off, n := rc.g.span(st, i)
	if !rc.partial {
		return rc.data[off : off+int64(n) : off+int64(n)]
	}
	b := rc.stripeBuf(st)
	if b == nil {
		return nil
	}
	o := i * rc.g.shard
	return b[o : o+n : o+n]
}

// sinkQueue is how many completed stripes the delivery goroutine holds at
// once (queued or in the sink): enough that it finds the next one ready
// while the receive loop waits up to a status interval for datagrams,
// little against the budget (4 stripes of 64 × 1460 bytes: 374 KB).
const sinkQueue = 4

// sinkJob is a completed stripe handed to the delivery goroutine; sinkDone
// gives its buffer back with the sink's answer.
type (
	sinkJob struct {
		st int64
		b  []byte
	}
	sinkDone struct {
		b   []byte
		err error
	}
)

// startSink starts the goroutine that feeds completed stripes to the
// caller's sink, so that a slow sink (a disk slower than the stream)
// never stops the receive loop: a loop that does not read the group nor
// report is dropped by the server as silent (nativeReceiverTimeout).
// Stripes wait in their buffers — within the budget — until the goroutine
// takes them; it owns a buffer from handover until it gives it back, so
// the loop alone touches bufs, free and bufBytes.
func (rc *recvState) startSink() {
	rc.sinkJobs = make(chan sinkJob, sinkQueue)
	rc.sinkBack = make(chan sinkDone, sinkQueue) // never full: at most sinkQueue handed over
	rc.sinkStop = make(chan struct{})
	rc.sinkExit = make(chan struct{})
	go deliverStripes(rc.g, rc.ranges, rc.deliver, rc.sinkJobs, rc.sinkBack, rc.sinkStop, rc.sinkExit)
}

// stopSink ends the delivery goroutine: it takes no stripe after this
// and calls the sink no more once the call under way has returned, which
// stopSink waits for (the caller reads what the sink built as soon as the
// download returns).
func (rc *recvState) stopSink() {
	if rc.sinkJobs == nil {
		return
	}
	close(rc.sinkStop)
	close(rc.sinkJobs)
	<-rc.sinkExit
	rc.sinkJobs = nil
}

// deliverStripes is the delivery goroutine: it hands the wanted bytes of
// each stripe to deliver and gives the buffer back. After the sink's
// first error, or once stopped, it only gives buffers back.
func deliverStripes(g geometry, ranges []Range, deliver func(int64, []byte) error, jobs <-chan sinkJob, back chan<- sinkDone, stop <-chan struct{}, exit chan<- struct{}) {
	defer close(exit)
	var failed error
	for j := range jobs {
		select {
		case <-stop:
			back <- sinkDone{j.b, nil}
			continue
		default:
		}
		var err error
		if failed == nil {
			err = deliverWanted(g, ranges, deliver, j.st, j.b)
			failed = err
		}
		back <- sinkDone{j.b, err}
	}
}

// deliverWanted hands the wanted bytes of stripe st, held in b, to
// deliver.
func deliverWanted(g geometry, ranges []Range, deliver func(int64, []byte) error, st int64, b []byte) error {
	base := st * int64(g.k) * int64(g.shard)
	end := min(base+int64(len(b)), g.size)
	i, _ := slices.BinarySearchFunc(ranges, base, func(r Range, off int64) int {
		switch {
		case r.Off+r.Len <= off:
			return -1
		case r.Off > off:
			return 1
		}
		return 0
	})
	for ; i < len(ranges) && ranges[i].Off < end; i++ {
		r := ranges[i]
		lo, hi := max(r.Off, base), min(r.Off+r.Len, end)
		if lo < hi {
			if err := deliver(lo, b[lo-base:hi-base]); err != nil {
				return err
			}
		}
	}
	return nil
}

// pumpSink takes back the buffers the delivery goroutine is done with
// (their bytes leave the budget) and hands it the next completed stripes
// while it has room; it never blocks.
func (rc *recvState) pumpSink() {
	if rc.sinkJobs == nil {
		return
	}
	for taken := true; taken; {
		select {
		case d := <-rc.sinkBack:
			rc.takeBack(d)
		default:
			taken = false
		}
	}
	for len(rc.ready) > 0 && rc.sinkOut < sinkQueue && rc.sinkErr == nil {
		st := rc.ready[0]
		rc.ready = rc.ready[1:]
		b := rc.bufs[st]
		delete(rc.bufs, st)
		rc.sinkOut++
		rc.sinkJobs <- sinkJob{st, b} // room: sinkOut < sinkQueue
	}
	if len(rc.ready) == 0 {
		rc.ready = nil // let the drained backing array go
	}
}

// takeBack takes a buffer back from the delivery goroutine.
func (rc *recvState) takeBack(d sinkDone) {
	rc.sinkOut--
	rc.bufBytes -= int64(len(d.b))
	if len(rc.free) < 16 {
		rc.free = append(rc.free, d.b)
	}
	if rc.sinkErr == nil {
		rc.sinkErr = d.err
	}
}

// deliverStripe queues a completed stripe for the sink. Its buffer stays
// counted against the budget until the sink is through with it.
func (rc *recvState) deliverStripe(st int64) {
	if _, ok := rc.bufs[st]; !ok {
		return
	}
	rc.ready = append(rc.ready, st)
	rc.pumpSink()
}

// finishPartial waits (within ctx) until every completed stripe is
// through the sink — reporting meanwhile, so the server keeps the
// receiver — then tells the server the download is complete (or failed).
func (rc *recvState) finishPartial(ctx context.Context) error {
	ivl := time.Duration(max(20, min(1000, int(rc.sess.NakInterval)))) * time.Millisecond
	tick := time.NewTicker(ivl)
	defer tick.Stop()
	var status []byte
	for rc.sinkErr == nil && (len(rc.ready) > 0 || rc.sinkOut > 0) {
		select {
		case d := <-rc.sinkBack:
			rc.takeBack(d)
			rc.pumpSink()
		case <-tick.C:
			status = rc.sendStatus(status, time.Now())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	rc.sendDone(ctx, rc.sinkErr == nil)
	if rc.sinkErr != nil {
		return rc.sinkErr
	}
	if len(rc.bufs) > 0 {
		return errors.New("mtftp: stripes left undelivered")
	}
	return nil
}
