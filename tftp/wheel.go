package tftp

import "time"

// A hashed timer wheel for the single-port event loops (loop.go): every
// transfer has one timer, re-armed on each ACK, so arming and disarming
// are O(1) list operations; timers further out than one turn wait in
// their slot for their round.
const (
	wheelSlots = 4096             // one turn: 4.096 s, past DefaultMaxRTO/2
	wheelTick  = time.Millisecond // well under DefaultMinRTO (50 ms)
)

type timerWheel struct {
	base  time.Time // tick 0; set at the first add
	cur   int64     // every tick up to cur has expired
	min   int64     // no timer is due before this tick
	n     int
	slots [wheelSlots]*loopSession
}

// tickAt is the first tick not before t: a timer fires at its tick, never
// before its time.
func (w *timerWheel) tickAt(t time.Time) int64 {
	d := t.Sub(w.base)
	k := int64(d / wheelTick)
	if d%wheelTick > 0 {
		k++
	}
	return k
}

// add arms ls's timer at due (re-arming it if armed).
func (w *timerWheel) add(ls *loopSession, due time.Time) {
	if w.base.IsZero() {
		w.base = time.Now()
	}
	w.remove(ls)
	k := max(w.tickAt(due), w.cur+1)
	ls.tick = k
	head := &w.slots[k%wheelSlots]
	ls.wprev, ls.wnext = nil, *head
	if *head != nil {
		(*head).wprev = ls
	}
	*head = ls
	ls.inWheel = true
	w.n++
	if w.n == 1 || k < w.min {
		w.min = k
	}
}

// remove disarms ls's timer.
func (w *timerWheel) remove(ls *loopSession) {
	if !ls.inWheel {
		return
	}
	if ls.wprev != nil {
		ls.wprev.wnext = ls.wnext
	} else {
		w.slots[ls.tick%wheelSlots] = ls.wnext
	}
	if ls.wnext != nil {
		ls.wnext.wprev = ls.wprev
	}
	ls.wprev, ls.wnext, ls.inWheel = nil, nil, false
	w.n--
}

// expire disarms the timers due at now and appends them to out.
func (w *timerWheel) expire(now time.Time, out []*loopSession) []*loopSession {
	if w.base.IsZero() {
		return out
	}
	end := int64(now.Sub(w.base) / wheelTick)
	if end <= w.cur {
		return out
	}
	from := max(w.cur+1, end-wheelSlots+1)
	for t := from; t <= end && w.n > 0; t++ {
		for ls := w.slots[t%wheelSlots]; ls != nil; {
			next := ls.wnext
			if ls.tick <= end {
				w.remove(ls)
				out = append(out, ls)
			}
			ls = next
		}
	}
	w.cur = end
	w.min = max(w.min, end+1)
	return out
}

// next is when the loop must wake for the earliest timer (early is
// harmless), or idle from now when none is armed.
func (w *timerWheel) next(idle time.Duration) time.Time {
	if w.n == 0 {
		return time.Now().Add(idle)
	}
	w.min = max(w.min, w.cur+1)
	for i := 0; i < wheelSlots && w.slots[w.min%wheelSlots] == nil; i++ {
		w.min++
	}
	return w.base.Add(time.Duration(w.min) * wheelTick)
}
