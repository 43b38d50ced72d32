package image

import (
	"fmt"
	"slices"
	"sync"
)

// Range is a byte range of the image file.
type Range struct{ Off, Len int64 }

// Assembler turns byte ranges of the image file, delivered in any order and
// any sizes (as multicast stripes arrive), into whole stored chunks for a
// ChunkWriter. Only the chunks marked needed are assembled; a stored range
// shared by several needed chunks (identical chunks) is assembled once and
// written to each of them.
//
// Memory: a chunk's buffer is taken (ChunkWriter.Buffer) when its first
// byte arrives and handed to the writer when its last does, so only
// partially filled chunks are held. Bytes delivered twice are harmless
// (the buffer is overwritten with them; the digest check decides).
//
// Deliver, Ranges and Missing are safe for concurrent use.
type Assembler struct {
	ix     *Index
	w      *ChunkWriter
	groups []asmGroup // by stored offset
	maxLen int64      // the longest stored range: how far back a group can start and still cover a byte
	ranges []Range
	shared [][]int // chunks after the first of each shared range

	mu      sync.Mutex
	partial map[int]*asmPartial // by group
	missing int                 // needed chunks not yet put
	// maxPartial caps the chunks being assembled at once (0: no cap).
	// Bytes that would start another are ignored: the chunk stays
	// missing and is fetched later (by unicast, in a deploy). A sender
	// completing one stripe of every chunk cannot make the receiver hold
	// a chunk-size buffer for each.
	maxPartial int
	dropped    int64        // deliveries ignored at the cap
	skipped    map[int]bool // groups whose first bytes were ignored: never started later (they could not complete)
}

// LimitPartial caps the chunks assembled at once (see maxPartial).
func (a *Assembler) LimitPartial(n int) { a.maxPartial = n }

// asmGroup is one stored range and the needed chunks that use it. It is
// kept small (one per needed chunk of a disk of millions of chunks); the
// state of a partly received range lives in Assembler.partial.
type asmGroup struct {
	off   int64
	n     int32
	first int32 // the first chunk using the range
	more  int32 // index in Assembler.shared of the other chunks, or -1
	done  bool
}

// asmPartial is a stored range of which some bytes have arrived.
type asmPartial struct {
	buf  []byte
	have int   // distinct bytes received
	got  []ivl // received intervals, sorted and disjoint, relative to the range
}

type ivl struct{ lo, hi int }

// NewAssembler prepares the assembly of the chunks with need[i] true (every
// data chunk if need is nil; holes never) into w.
func NewAssembler(ix *Index, need []bool, w *ChunkWriter) *Assembler {
	type key struct {
		e   Entry
		raw int
	}
	byEntry := map[key]int{}
	a := &Assembler{ix: ix, w: w, partial: map[int]*asmPartial{}}
	for i, e := range ix.Entries {
		if e.Kind == KindHole || (need != nil && (i >= len(need) || !need[i])) {
			continue
		}
		_, rn := ix.RawSpan(i)
		k := key{e, rn}
		g, ok := byEntry[k]
		a.missing++
		if !ok {
			byEntry[k] = len(a.groups)
			a.groups = append(a.groups, asmGroup{off: int64(e.Offset), n: int32(e.Len), first: int32(i), more: -1})
			a.maxLen = max(a.maxLen, int64(e.Len))
			continue
		}
		if a.groups[g].more < 0 {
			a.groups[g].more = int32(len(a.shared))
			a.shared = append(a.shared, nil)
		}
		a.shared[a.groups[g].more] = append(a.shared[a.groups[g].more], i)
	}
	slices.SortFunc(a.groups, func(x, y asmGroup) int {
		if x.off != y.off {
			return int(min(max(x.off-y.off, -1), 1))
		}
		return int(x.n - y.n)
	})
	for _, g := range a.groups {
		if l := len(a.ranges); l > 0 && a.ranges[l-1].Off+a.ranges[l-1].Len >= g.off {
			last := &a.ranges[l-1]
			last.Len = max(last.Len, g.off+int64(g.n)-last.Off)
			continue
		}
		a.ranges = append(a.ranges, Range{Off: g.off, Len: int64(g.n)})
	}
	return a
}

// Ranges returns the stored byte ranges of the needed chunks: sorted,
// overlapping and adjacent ones merged, each shared range once.
func (a *Assembler) Ranges() []Range { return slices.Clone(a.ranges) }

// Missing is the number of needed chunks not yet handed to the writer.
func (a *Assembler) Missing() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.missing
}

// Deliver takes b, the image file's bytes at off. It copies the parts that
// fall in needed chunks and puts each chunk that is complete (blocking
// while the writer's queue is full); other bytes are ignored. b is not
// retained. It returns the writer's first error, and an error for a range
// outside the image file.
func (a *Assembler) Deliver(off int64, b []byte) error {
	if off < 0 || off > a.ix.FileSize() || int64(len(b)) > a.ix.FileSize()-off {
		return fmt.Errorf("image: delivered range %d+%d is outside the %d-byte image file", off, len(b), a.ix.FileSize())
	}
	if err := a.w.Err(); err != nil {
		return err
	}
	end := off + int64(len(b))
	a.mu.Lock()
	defer a.mu.Unlock()
	// The first group that may still cover off starts after off-maxLen.
	gi, _ := slices.BinarySearchFunc(a.groups, off-a.maxLen+1, func(g asmGroup, t int64) int {
		return int(min(max(g.off-t, -1), 1))
	})
	for ; gi < len(a.groups) && a.groups[gi].off < end; gi++ {
		g := &a.groups[gi]
		gEnd := g.off + int64(g.n)
		if g.done || gEnd <= off {
			continue
		}
		lo, hi := max(off, g.off), min(end, gEnd)
		p := a.partial[gi]
		if p == nil {
			if a.skipped[gi] {
				continue
			}
			if a.maxPartial > 0 && len(a.partial) >= a.maxPartial {
				if a.skipped == nil {
					a.skipped = map[int]bool{}
				}
				a.skipped[gi] = true
				a.dropped++
				continue
			}
			p = &asmPartial{buf: a.w.Buffer(int(g.n))}
			a.partial[gi] = p
		}
		copy(p.buf[lo-g.off:], b[lo-off:hi-off])
		p.have += p.add(int(lo-g.off), int(hi-g.off))
		if p.have < int(g.n) {
			continue
		}
		delete(a.partial, gi)
		g.done = true
		chunks := []int{int(g.first)}
		if g.more >= 0 {
			chunks = append(chunks, a.shared[g.more]...)
		}
		a.missing -= len(chunks)
		if err := a.w.PutShared(chunks, p.buf); err != nil {
			return err
		}
	}
	return nil
}

// add records [lo,hi) as received and returns how many of its bytes were
// not received before.
func (p *asmPartial) add(lo, hi int) int {
	// Find the intervals [i,j) that touch [lo,hi), merge them with it.
	i := 0
	for i < len(p.got) && p.got[i].hi < lo {
		i++
	}
	j := i
	covered := 0
	nlo, nhi := lo, hi
	for j < len(p.got) && p.got[j].lo <= hi {
		covered += max(0, min(p.got[j].hi, hi)-max(p.got[j].lo, lo))
		nlo, nhi = min(nlo, p.got[j].lo), max(nhi, p.got[j].hi)
		j++
	}
	p.got = slices.Replace(p.got, i, j, ivl{nlo, nhi})
	return hi - lo - covered
}

// requests cuts the needed stored ranges into requests of at most limit
// bytes, each made of whole chunks (a chunk longer than limit is one request
// of its own), so that no chunk waits on two requests.
func (a *Assembler) requests(limit int64) []Range {
	var out []Range
	for _, g := range a.groups {
		gEnd := g.off + int64(g.n)
		if l := len(out); l > 0 {
			last := &out[l-1]
			if last.Off+last.Len >= g.off && gEnd-last.Off <= limit {
				last.Len = max(last.Len, gEnd-last.Off)
				continue
			}
			if last.Off+last.Len >= gEnd {
				continue // inside the previous request already
			}
		}
		out = append(out, Range{Off: g.off, Len: int64(g.n)})
	}
	return out
}
