package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/tftp"
)

// DeployOptions says what to deploy where and how.
type DeployOptions struct {
	// Server is the mtftpd TFTP address, HOST[:PORT] (69 by default):
	// native multicast joins there, and the index comes from there when
	// HTTP is empty.
	Server string
	// HTTP is the mirror's base URL ("http://192.0.2.1:8069"); empty: no
	// HTTP. With it the index comes by HTTP and, when multicast is not to
	// be had, the chunks too (Range requests, several in parallel).
	HTTP string
	// Image is the image's name on the server ("images/room.img").
	Image string
	// Disk is the target: a block device or a regular file.
	Disk string
	// Unicast skips multicast: the chunks come by HTTP (or TFTP).
	Unicast bool
	// AssumeBlank skips zeroing the holes: the disk reads as zeros there
	// already (new, or discarded).
	AssumeBlank bool
	// NoResume skips reading the disk for chunks it already holds: every
	// data chunk is fetched.
	NoResume bool
	// Verify re-reads the whole disk at the end and checks the image
	// digest.
	Verify bool
	// Workers decode and write chunks (and scan); 0 = GOMAXPROCS.
	Workers int
	// BlockSize is the TFTP blksize asked for (multicast shard + 8, and
	// the TFTP index and fallback); 0 = 1468 (a 1500-byte MTU).
	BlockSize int
	// Interface to join the multicast group on; "" = the route's.
	Interface string
	// Start asks for a session start policy (the server caps it).
	Start mtftp.StartPolicy
	// Timeout is the silence tolerated from the server; 0 = 10 s.
	Timeout time.Duration
	// Log receives progress events.
	Log zerolog.Logger
	// Phase, if set, is called as each phase begins.
	Phase func(p Phase)
}

// Phase is a step of a deploy.
type Phase string

const (
	PhaseIndex   Phase = "index"
	PhaseScan    Phase = "scan"
	PhaseHoles   Phase = "holes"
	PhaseReceive Phase = "receive"
	PhaseSync    Phase = "sync"
	PhaseVerify  Phase = "verify"
)

// DeployResult reports a finished deploy.
type DeployResult struct {
	Index     *Index
	Needed    int   // data chunks fetched (the rest were on the disk already)
	Held      int   // data chunks the disk held already
	NeedBytes int64 // their stored bytes (shared ones once)
	Written   Progress
	Via       string // "multicast", "http", "tftp", "multicast+http", "multicast+tftp" or "" (nothing was needed)
	Refetched int    // chunks fetched by unicast after multicast (missing, or failed their digest)
	Multicast mtftp.NativeResult
	Phases    map[Phase]time.Duration
	Duration  time.Duration
}

// Deployer deploys one image; its progress can be read while Deploy runs.
type Deployer struct {
	Opts DeployOptions

	// tftpTimeout and tftpRetries, when set, are the tftp.Client Timeout
	// and Retries of the index read and the size probe (tests: a silent
	// server answers "no answer" in milliseconds).
	tftpTimeout time.Duration
	tftpRetries int

	w        atomic.Pointer[ChunkWriter]
	total    atomic.Int64 // raw bytes the deploy will write, once known
	received atomic.Int64 // stored bytes taken in the receive phase
}

// Progress is the raw bytes written so far and the total to write (-1
// before it is known).
func (d *Deployer) Progress() (written, total int64) {
	t := d.total.Load()
	if t == 0 {
		t = -1
	}
	if w := d.w.Load(); w != nil {
		p := w.Progress()
		return p.Bytes + p.HoleBytes, t
	}
	return 0, t
}

// ErrImageNotFound: the server has no such image.
var ErrImageNotFound = errors.New("image not found on the server")

// Deploy writes the image to the disk. Before anything is written it
// fetches the index and refuses a disk that is too small, mounted, or the
// running system's; then it reads the disk for the chunks it holds already
// (resume, delta), zeroes the holes, and receives the rest — by native
// multicast, falling back to HTTP (or TFTP) — each chunk checked against
// its digest before it is written at its raw offset. Nothing of the image
// is staged anywhere; memory stays bounded whatever its size.
func (d *Deployer) Deploy(ctx context.Context) (res DeployResult, err error) {
	o := d.Opts
	start := time.Now()
	res.Phases = map[Phase]time.Duration{}
	defer func() { res.Duration = time.Since(start) }()
	// phase runs one phase, timed into res.Phases (0 if it fails).
	phase := func(p Phase, f func() error) error {
		phaseStart := time.Now()
		res.Phases[p] = 0
		if o.Phase != nil {
			o.Phase(p)
		}
		if err := f(); err != nil {
			return err
		}
		res.Phases[p] = time.Since(phaseStart)
		return nil
	}

	var ix *Index
	if err := phase(PhaseIndex, func() (err error) {
		ix, err = d.fetchIndex(ctx)
		if err != nil {
			return err
		}
		res.Index = ix
		return d.checkServerSize(ctx, ix)
	}); err != nil {
		return res, err
	}
	t, err := OpenTarget(o.Disk, int64(ix.Header.RawSize), TargetOptions{})
	if err != nil {
		return res, err
	}
	defer t.Close()

	var need []bool
	if o.NoResume {
		need = make([]bool, len(ix.Entries))
		for i, e := range ix.Entries {
			need[i] = e.Kind != KindHole
		}
	} else if err := phase(PhaseScan, func() (err error) {
		need, err = Scan(ctx, t, ix, o.Workers, nil)
		return err
	}); err != nil {
		return res, err
	}
	holeBytes := d.count(ix, need, &res)
	w := NewChunkWriter(ix, t, o.Workers)
	d.w.Store(w)
	defer w.Close()
	if !o.AssumeBlank {
		d.total.Add(holeBytes)
		if err := phase(PhaseHoles, func() error { return w.ZeroHoles(ctx) }); err != nil {
			return res, err
		}
	}
	if res.Needed > 0 {
		if err := phase(PhaseReceive, func() error { return d.receive(ctx, ix, need, w, &res) }); err != nil {
			return res, err
		}
	}
	if err := phase(PhaseSync, w.Close); err != nil {
		return res, err
	}
	res.Written = w.Progress()
	if o.Verify {
		if err := phase(PhaseVerify, func() error { return VerifyTarget(ctx, t, ix, o.Workers) }); err != nil {
			return res, err
		}
	}
	return res, nil
}

// checkServerSize refuses an image whose size on the server is not the
// size its index says: a truncated image is refused here, before the disk
// is touched, not when the stream runs short half way.
func (d *Deployer) checkServerSize(ctx context.Context, ix *Index) error {
	size, err := d.serverSize(ctx)
	if err != nil {
		return err
	}
	if size < 0 || size == ix.FileSize() { // -1: the server did not say
		return nil
	}
	what := "longer"
	if size < ix.FileSize() {
		what = "shorter: truncated"
	}
	return &FormatError{Offset: size, Err: ErrTruncated,
		What: fmt.Sprintf("%s on the server is %d bytes, its index says %d (%s, or changed)", d.Opts.Image, size, ix.FileSize(), what)}
}

// count fills in res.Needed, res.NeedBytes and res.Held from need, adds
// the raw bytes to fetch to the progress total, and returns the raw bytes
// in holes.
func (d *Deployer) count(ix *Index, need []bool, res *DeployResult) (holeBytes int64) {
	shared := map[uint64]bool{} // identical chunks share stored bytes: fetched once
	for i, e := range ix.Entries {
		_, n := ix.RawSpan(i)
		switch {
		case e.Kind == KindHole:
			holeBytes += int64(n)
		case need[i]:
			res.Needed++
			if !shared[e.Offset] {
				shared[e.Offset] = true
				res.NeedBytes += int64(e.Len)
			}
			d.total.Add(int64(n))
		default:
			res.Held++
		}
	}
	return holeBytes
}

// receive fetches the needed chunks: by multicast unless told otherwise,
// then by HTTP (or TFTP without a mirror) whatever multicast did not bring
// whole and right — chunks it left missing, and chunks that failed their
// digest: anyone on the LAN can forge a multicast datagram, so over
// multicast a bad chunk is fetched again rather than ending the deploy.
// A chunk that fails its digest by unicast ends it.
func (d *Deployer) receive(ctx context.Context, ix *Index, need []bool, w *ChunkWriter, res *DeployResult) error {
	o := d.Opts
	if !o.Unicast {
		var mu sync.Mutex
		var bad []int
		w.Tolerate(func(chunks []int, err error) {
			o.Log.Warn().Err(err).Ints("chunks", chunks).Msg("image: a chunk from the multicast stream failed its digest; it will be fetched again by unicast")
			mu.Lock()
			bad = append(bad, chunks...)
			mu.Unlock()
		})
		asm := NewAssembler(ix, need, w)
		// A few chunks per core are assembled at once (at most 16 MiB):
		// the stream brings chunks nearly in order (an interleave group
		// spans about 6 MB of the image), so this is not reached unless
		// someone forges stripes of many chunks.
		asm.LimitPartial(max(8, 16<<20/int(ix.Header.ChunkSize)))
		ranges := asm.Ranges()
		want := make([]mtftp.Range, len(ranges))
		for i, r := range ranges {
			want[i] = mtftp.Range{Off: r.Off, Len: r.Len}
		}
		rc := &mtftp.NativeReceiver{BlockSize: o.blockSize(), Interface: o.Interface, Timeout: o.Timeout, Log: o.Log, Start: o.Start}
		mres, err := rc.GetRanges(ctx, o.Server, o.Image, ix.FileSize(), want, func(off int64, b []byte) error {
			d.received.Add(int64(len(b)))
			return asm.Deliver(off, b)
		})
		res.Multicast = mres
		w.Wait()
		w.Tolerate(nil)
		if werr := w.Err(); werr != nil {
			return werr // a write failed: no fallback hides that
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		need = asm.remaining()
		mu.Lock()
		for _, c := range bad {
			need[c] = true
		}
		nbad := len(bad)
		mu.Unlock()
		left := 0
		for _, n := range need {
			if n {
				left++
			}
		}
		if err == nil && left == 0 {
			res.Via = "multicast"
			return nil
		}
		res.Refetched = left
		o.Log.Warn().AnErr("multicast", err).Int("chunks_left", left).Int("chunks_bad", nbad).Msg("image: the rest by unicast")
		if err != nil && !errors.Is(err, mtftp.ErrNativeUnsupported) && left == res.Needed {
			o.Log.Warn().Err(err).Msg("image: multicast brought nothing")
		}
		res.Via = "multicast+"
	}
	if o.HTTP != "" {
		res.Via += "http"
		return FetchHTTP(ctx, httpClient(), o.imageURL(), ix, need, w, 4)
	}
	res.Via += "tftp"
	return d.fetchTFTP(ctx, ix, need, w)
}

// httpClient bounds every wait on the mirror: connecting, the response
// header, and any read (a minute of silence mid-body), so a stalled or
// hostile server cannot hold a deploy forever.
func httpClient() *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, idle: time.Minute}, nil
		},
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   8,
	}}
}

// idleConn fails a read that waits longer than idle.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(b)
}

func (o DeployOptions) blockSize() int {
	if o.BlockSize > 0 {
		return o.BlockSize
	}
	return 1468
}

func (o DeployOptions) imageURL() string {
	return strings.TrimRight(o.HTTP, "/") + "/" + strings.TrimLeft(o.Image, "/")
}

// tftpReads is how many times the index read, or the size probe, is
// started before the deploy gives up: one that gets no answer
// (tftp.ErrNoAnswer, after the client's own retries; a transfer silent
// midway counts too) is started again as a new transfer, from a new port.
// A room's deploy should not fail on one 50 KB read: in one CI run of
// TestLabImageRoom a receiver's index read heard nothing from the server
// for 47 s, both ways, while 19 other receivers went on.
const tftpReads = 3

// askAgain runs read, a TFTP read of what, up to tftpReads times while it
// ends with no answer. Any other error — the server's ERROR, a bad
// index, ctx done — ends it at once.
func (d *Deployer) askAgain(ctx context.Context, what string, read func() error) error {
	var err error
	for try := 1; try <= tftpReads; try++ {
		if err = read(); err == nil || !errors.Is(err, tftp.ErrNoAnswer) || ctx.Err() != nil {
			return err
		}
		if try < tftpReads {
			d.Opts.Log.Warn().Err(err).Int("try", try).Msgf("image: no answer to the %s; asking again", what)
		}
	}
	return fmt.Errorf("%w (%d reads)", err, tftpReads)
}

// fetchIndex reads the header and index by HTTP, or by TFTP: a download
// of the image that the client ends once the index is in (it has read
// ahead up to its write buffer by then).
func (d *Deployer) fetchIndex(ctx context.Context) (*Index, error) {
	o := d.Opts
	if o.HTTP != "" {
		ix, err := FetchIndexHTTP(ctx, httpClient(), o.imageURL())
		if err != nil && strings.Contains(err.Error(), "404") {
			return nil, fmt.Errorf("%s: %w (%v)", o.Image, ErrImageNotFound, err)
		}
		return ix, err
	}
	var ix *Index
	err := d.askAgain(ctx, "index read", func() (err error) {
		ix, err = d.fetchIndexTFTP(ctx)
		return err
	})
	return ix, err
}

// fetchIndexTFTP is one TFTP read of the index.
func (d *Deployer) fetchIndexTFTP(ctx context.Context) (*Index, error) {
	o := d.Opts
	pr, pw := io.Pipe()
	// Each block reaches ReadIndex as it comes, and a small window: the
	// transfer ends with the index, not a megabyte later (50 receivers
	// each fetching a megabyte ahead showed as 0.7× the image on the
	// server's wire).
	c := &tftp.Client{BlockSize: o.blockSize(), WindowSize: 4, WriteBuffer: o.blockSize(),
		Timeout: d.tftpTimeout, Retries: d.tftpRetries}
	got := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, o.Server, o.Image, pw)
		pw.CloseWithError(err)
		got <- err
	}()
	ix, err := ReadIndex(pr)
	pr.CloseWithError(errIndexIn) // ends the download
	terr := <-got
	var re *tftp.RemoteError
	if errors.As(terr, &re) && re.Code == tftp.ErrCodeNotFound {
		return nil, fmt.Errorf("%s: %w (TFTP: %v)", o.Image, ErrImageNotFound, re)
	}
	if err != nil && terr != nil && !errors.Is(terr, errIndexIn) {
		return nil, fmt.Errorf("image: the index of %s by TFTP from %s: %w", o.Image, o.Server, terr)
	}
	return ix, err
}

var errIndexIn = errors.New("image: index read; download ended")

// serverSize asks the server for the image file's size: HTTP HEAD, or the
// TFTP tsize option (a transfer ended right after its OACK).
func (d *Deployer) serverSize(ctx context.Context) (int64, error) {
	o := d.Opts
	if o.HTTP != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, o.imageURL(), nil)
		if err != nil {
			return 0, err
		}
		resp, err := httpClient().Do(req)
		if err != nil {
			return 0, fmt.Errorf("image: HEAD %s: %w", o.imageURL(), err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength < 0 {
			return 0, fmt.Errorf("image: HEAD %s: %s, length %d", o.imageURL(), resp.Status, resp.ContentLength)
		}
		return resp.ContentLength, nil
	}
	c := &tftp.Client{BlockSize: o.blockSize(), Timeout: d.tftpTimeout, Retries: d.tftpRetries}
	var n int64
	err := d.askAgain(ctx, "size probe", func() (err error) {
		n, err = c.ProbeSize(ctx, o.Server, o.Image)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("image: the size of %s by TFTP from %s: %w", o.Image, o.Server, err)
	}
	return n, nil
}

// fetchTFTP streams the whole image file by TFTP through the assembler,
// which keeps only the needed chunks: the fallback without a mirror.
func (d *Deployer) fetchTFTP(ctx context.Context, ix *Index, need []bool, w *ChunkWriter) error {
	o := d.Opts
	asm := NewAssembler(ix, need, w)
	c := &tftp.Client{BlockSize: o.blockSize(), WindowSize: 16}
	sw := &assemblerWriter{asm: asm, d: d}
	if _, err := c.Get(ctx, o.Server, o.Image, sw); err != nil {
		return fmt.Errorf("image: %s by TFTP from %s: %w", o.Image, o.Server, err)
	}
	if sw.off != ix.FileSize() {
		return fmt.Errorf("image: %s by TFTP ends at byte %d, its index says %d: the image on the server is truncated (or changed)", o.Image, sw.off, ix.FileSize())
	}
	if n := asm.Missing(); n > 0 {
		return fmt.Errorf("image: %d chunks missing after the TFTP download (the image changed?)", n)
	}
	return nil
}

// assemblerWriter feeds a sequential download to an Assembler.
type assemblerWriter struct {
	asm *Assembler
	d   *Deployer
	off int64
}

func (a *assemblerWriter) Write(b []byte) (int, error) {
	if a.off+int64(len(b)) > a.asm.ix.FileSize() {
		return 0, fmt.Errorf("image: the server's file is longer than the image's %d bytes (it changed)", a.asm.ix.FileSize())
	}
	if err := a.asm.Deliver(a.off, b); err != nil {
		return 0, err
	}
	a.off += int64(len(b))
	a.d.received.Add(int64(len(b)))
	return len(b), nil
}

// remaining returns need for the chunks not yet handed to the writer.
func (a *Assembler) remaining() []bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	need := make([]bool, len(a.ix.Entries))
	for _, g := range a.groups {
		if g.done {
			continue
		}
		need[g.first] = true
		if g.more >= 0 {
			for _, c := range a.shared[g.more] {
				need[c] = true
			}
		}
	}
	return need
}

// Received is the stored bytes taken in the receive phase so far.
func (d *Deployer) Received() int64 { return d.received.Load() }
