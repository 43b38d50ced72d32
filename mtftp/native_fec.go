package mtftp

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/klauspost/reedsolomon"
)

// Native dialect repairs are Reed-Solomon parity (docs/native-multicast.md):
// the file is cut into shards of one datagram's payload, K shards make a
// stripe, and any K distinct shards of a stripe (data or parity) rebuild
// it. A repair shard is therefore useful to every receiver that lacks
// anything in that stripe, whichever blocks each one lost: with 50
// receivers each losing a different 5 %, the server sends the largest
// count any one of them misses, not the union of their losses.
const (
	// DefaultStripeData is K: data shards per stripe. Larger stripes need
	// fewer repairs in proportion (the worst receiver's loss in a stripe
	// averages out) but cost more to encode and decode.
	DefaultStripeData = 64
	// DefaultStripeParity is M: distinct parity shards a stripe can have,
	// enough for a receiver that lost the whole stripe. Past that, repairs
	// send the data shards receivers name in their NAKs.
	DefaultStripeParity = 64
)

// geometry is a file's layout in shards and stripes.
type geometry struct {
	size      int64
	shard     int // bytes per shard
	k, m      int
	blocks    int64 // data shards in the file
	stripes   int64
	lastShard int // bytes in the final data shard (1..shard), 0 for an empty file
}

func newGeometry(size int64, shard, k, m int) (geometry, error) {
	if shard < 8 || k < 1 || m < 1 || k+m > 256 {
		return geometry{}, fmt.Errorf("mtftp: bad stripe geometry shard=%d k=%d m=%d", shard, k, m)
	}
	g := geometry{size: size, shard: shard, k: k, m: m}
	g.blocks = (size + int64(shard) - 1) / int64(shard)
	g.stripes = (g.blocks + int64(k) - 1) / int64(k)
	if g.stripes == 0 {
		g.stripes = 1 // an empty file is one empty stripe, so there is something to announce and complete
	}
	if g.blocks > 0 {
		g.lastShard = int(size - (g.blocks-1)*int64(shard))
	}
	if g.stripes > 1<<32-1 {
		return geometry{}, fmt.Errorf("mtftp: %d stripes: file too large for shard size %d", g.stripes, shard)
	}
	return g, nil
}

// dataIn is the number of real data shards in stripe s (the last stripe
// may have fewer than K; the rest count as zeros that every receiver holds).
func (g geometry) dataIn(s int64) int {
	first := s * int64(g.k)
	return int(max(0, min(int64(g.k), g.blocks-first)))
}

// span returns the byte range of data shard i of stripe s in the file.
func (g geometry) span(s int64, i int) (off int64, n int) {
	b := s*int64(g.k) + int64(i)
	off = b * int64(g.shard)
	if b == g.blocks-1 {
		return off, g.lastShard
	}
	return off, g.shard
}

// codec is one Reed-Solomon code for a geometry's K and M, shared by the
// sessions and receivers that use them (encoders are safe for concurrent
// use and building one computes a matrix).
func codec(k, m int) (reedsolomon.Encoder, error) {
	key := [2]int{k, m}
	codecs.Lock()
	defer codecs.Unlock()
	if e, ok := codecs.m[key]; ok {
		return e, nil
	}
	e, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, err
	}
	codecs.m[key] = e
	return e, nil
}

var codecs = struct {
	sync.Mutex
	m map[[2]int]reedsolomon.Encoder
}{m: map[[2]int]reedsolomon.Encoder{}}

// stripeShards fills shards[:k] with the data of stripe s: slices of data
// where a shard is whole, zero-padded copies in pad otherwise (the final
// short block and the zeros past the file's end). It returns pad, grown
// once to K shards if it was smaller.
func (g geometry) stripeShards(data []byte, s int64, shards [][]byte, pad []byte) []byte {
	if cap(pad) < g.k*g.shard {
		pad = make([]byte, 0, g.k*g.shard) // never grown later: shards alias it
	}
	pad = pad[:0]
	for i := range g.k {
		off, n := g.span(s, i)
		if i < g.dataIn(s) && n == g.shard {
			shards[i] = data[off : off+int64(n)]
			continue
		}
		start := len(pad)
		pad = pad[:start+g.shard]
		clear(pad[start:])
		if i < g.dataIn(s) {
			copy(pad[start:], data[off:off+int64(n)])
		}
		shards[i] = pad[start : start+g.shard]
	}
	return pad
}

// parityCache holds the parity of recently repaired stripes, bounded in
// bytes; a stripe evicted is encoded again if asked for again (a few
// hundred microseconds). Used only by the session's sender goroutine.
type parityCache struct {
	g       geometry
	enc     reedsolomon.Encoder
	max     int
	stripes map[int64][][]byte
	order   []int64
	shards  [][]byte
	pad     []byte
	// used counts the parity every session caches (a server-wide
	// budget); held is this cache's part of it; spare is one stripe's
	// parity computed without caching once the budget is spent.
	used     *atomic.Int64
	held     int64
	spare    [][]byte
	spareFor int64 // the stripe whose parity spare holds (-1: none)
}

func newParityCache(g geometry, maxBytes int, used *atomic.Int64) (*parityCache, error) {
	enc, err := codec(g.k, g.m)
	if err != nil {
		return nil, err
	}
	if used == nil {
		used = new(atomic.Int64)
	}
	return &parityCache{g: g, enc: enc, max: max(1, maxBytes/(g.m*g.shard)), stripes: map[int64][][]byte{},
		shards: make([][]byte, g.k+g.m), used: used, spareFor: -1}, nil
}

// release gives the cache's bytes back to the server-wide budget.
func (c *parityCache) release() {
	c.used.Add(-c.held)
	c.held = 0
	clear(c.stripes)
	c.order = nil
}

func newParity(g geometry) [][]byte {
	p := make([][]byte, g.m)
	for i := range p {
		p[i] = make([]byte, g.shard)
	}
	return p
}

// parity returns parity shard j of stripe s, encoding the stripe's parity
// from data if it is not cached. The server-wide budget
// (nativeParityBudget) holds first: past it a stripe's parity is computed
// into a spare and not kept.
func (c *parityCache) parity(data []byte, s int64, j int) ([]byte, error) {
	if p, ok := c.stripes[s]; ok {
		return p[j], nil
	}
	if c.spareFor == s {
		return c.spare[j], nil
	}
	var p [][]byte
	size := int64(c.g.m * c.g.shard)
	switch {
	case len(c.order) >= c.max || (len(c.order) > 0 && c.used.Load()+size > nativeParityBudget):
		old := c.order[0]
		c.order = c.order[1:]
		p = c.stripes[old] // reuse the evicted stripe's buffers
		delete(c.stripes, old)
	case c.used.Add(size) <= nativeParityBudget:
		c.held += size
		p = newParity(c.g)
	default:
		c.used.Add(-size)
		if c.spare == nil {
			c.spare = newParity(c.g)
		}
		c.pad = c.g.stripeShards(data, s, c.shards, c.pad)
		copy(c.shards[c.g.k:], c.spare)
		if err := c.enc.Encode(c.shards); err != nil {
			c.spareFor = -1
			return nil, err
		}
		c.spareFor = s
		return c.spare[j], nil
	}
	c.pad = c.g.stripeShards(data, s, c.shards, c.pad)
	copy(c.shards[c.g.k:], p)
	if err := c.enc.Encode(c.shards); err != nil {
		return nil, err
	}
	c.stripes[s] = p
	c.order = append(c.order, s)
	return p[j], nil
}
