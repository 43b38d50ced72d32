package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtftpd/mtftpd/mtftp"
)

// Defaults and limits of MCastSwarm.
const (
	// MaxMCastReceivers bounds one swarm: each receiver holds two sockets
	// (one joined to the group), an output file and, for the native
	// dialect, a mapping of it.
	MaxMCastReceivers = 1000
	// DefaultMCastMaxTime caps a swarm without Duration.
	DefaultMCastMaxTime = 10 * time.Minute
	// MCastReportSchema names the JSON layout of MCastReport
	// (docs/bench-json.md).
	MCastReportSchema = "mtftpd-bench-mcast/1"
	// ErrKindUnsupported: the server does not offer the dialect (it
	// answered a native request as plain TFTP).
	ErrKindUnsupported = "unsupported"
)

// Dialects are the multicast dialects a swarm speaks.
var Dialects = []string{"native", "rfc2090", "pxe"}

// MCastSwarm plays Receivers multicast receivers of one dialect in one
// process, started together, each downloading File from the server at
// Target into a file of its own under Dir. Configure it through its
// fields; a zero field means the documented default. Requests go to
// Target's address only (the native dialect's session socket and the RFC
// 2090 transfer socket are on that address too); the group is only
// listened to.
type MCastSwarm struct {
	// Target is HOST[:PORT] of the server; the port defaults to 69
	// (native, rfc2090) or 1759 (pxe, iPXE's MTFTP port).
	Target    string
	File      string // required
	Receivers int    // 1..MaxMCastReceivers
	Dialect   string // native, rfc2090 or pxe
	// Dir holds the receivers' output files (r001.bin, ...); required.
	Dir string
	// BlockSize is the blksize asked for (native, rfc2090); 0 = the
	// receiver's default. PXE MTFTP has 512-byte blocks only.
	BlockSize int
	// Interface is where the group is joined; "" = the interface the
	// server is reached by.
	Interface string
	// PXEGroup is where PXE MTFTP DATA comes (the file's DHCP options
	// 43.1/43.2); zero = iPXE's 239.255.1.1:3001.
	PXEGroup netip.AddrPort
	// SourceAddrs are the local addresses receivers send from (receiver
	// i uses SourceAddrs[i mod len]): servers cap
	// transfers per client address (mtftpd: tftp.max_per_client, 16).
	// Empty: the address that routes to the server.
	SourceAddrs []netip.Addr
	// Timeout is the silence from the server each receiver tolerates (for
	// pxe: DELAY, the wait for each packet); 0 = the receiver's default.
	Timeout time.Duration
	// MaxTime caps the whole swarm; 0 = DefaultMCastMaxTime.
	MaxTime time.Duration
	// SHA256, if set, is the expected digest; Size, if > 0, the expected
	// size. The native dialect checks the server's digest by itself too.
	SHA256 []byte
	Size   int64
	// Live, if set, is updated while the swarm runs.
	Live *MCastLive
}

// MCastLive shows a running swarm, safe to read at any time.
type MCastLive struct {
	Completed atomic.Int64
	Failed    atomic.Int64
	mu        sync.Mutex
	held      []*atomic.Int64 // each receiver's bytes held
	sizes     []*atomic.Int64 // each receiver's file size (-1 unknown)
}

// Progress returns the bytes the receivers hold together and the bytes
// they need together (receivers that do not know the size yet count as
// needing what they hold).
func (l *MCastLive) Progress() (held, needed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.held {
		h, s := l.held[i].Load(), l.sizes[i].Load()
		held += h
		needed += max(h, s)
	}
	return held, needed
}

func (l *MCastLive) add(held, size *atomic.Int64) {
	l.mu.Lock()
	l.held, l.sizes = append(l.held, held), append(l.sizes, size)
	l.mu.Unlock()
}

// MCastReport is what a multicast swarm saw; it marshals to JSON as is
// (docs/bench-json.md documents every field).
type MCastReport struct {
	Schema    string `json:"schema"`
	Target    string `json:"target"`
	File      string `json:"file"`
	Dialect   string `json:"dialect"`
	Receivers int    `json:"receivers"`
	BlockSize int    `json:"blksize"` // asked for; 0 = the receiver's default
	// SourceAddrs is how many local addresses the receivers were spread
	// over (0 = the one that routes to the server).
	SourceAddrs int       `json:"source_addrs"`
	Verify      string    `json:"verify,omitempty"`
	Start       time.Time `json:"start"`
	// AllVerifiedSeconds is the time from the start until the last
	// receiver held the verified file; 0 when not all did.
	AllVerifiedSeconds float64 `json:"all_verified_seconds"`
	WallSeconds        float64 `json:"wall_seconds"`
	ClientCPUSeconds   float64 `json:"client_cpu_seconds"`
	FileSize           int64   `json:"file_size"` // -1 if none completed

	Completed    int     `json:"completed"` // verified
	Failed       int     `json:"failed"`
	SuccessRatio float64 `json:"success_ratio"`
	// ReceiverMs is each completed receiver's time from its request to
	// the verified file.
	ReceiverMs Latency `json:"receiver_ms"`
	// BytesReceived is the payload of every DATA (or shard) the
	// receivers took in, again-received ones included; BytesNeeded is
	// the file size times the receivers. Their ratio is the overhead.
	BytesReceived int64   `json:"bytes_received"`
	BytesNeeded   int64   `json:"bytes_needed"`
	ReceivedRatio float64 `json:"received_ratio"`
	Duplicates    int64   `json:"duplicates"`
	// RepairsAsked: native, stripes NAKed; rfc2090, ACKs a master sent
	// for a block it had seen go by without it; pxe, re-opens (an RRQ
	// after the first) for a pass over the gaps.
	RepairsAsked int64 `json:"repairs_asked"`
	// Rebuilt: native data shards rebuilt from parity. Lost: native
	// shards seen missing in the stream. Moves: native moves to a slower
	// stream. Masters: rfc2090 times made master; pxe passes
	// acknowledged.
	Rebuilt int64 `json:"rebuilt"`
	Lost    int64 `json:"lost"`
	Moves   int   `json:"moves"`
	Masters int   `json:"masters"`

	Errors       map[string]int `json:"errors"`
	ErrorSamples []string       `json:"error_samples,omitempty"`
	Stopped      string         `json:"stopped,omitempty"`
}

// mcastResult is one receiver's download, whatever its dialect.
type mcastResult struct {
	size, bytes, dups, repairs, rebuilt, lost int64
	moves, masters                            int
	dur                                       time.Duration // request to last block; 0 = until the call returned
	sha                                       string        // hex, "" = hash the file
}

func (s *MCastSwarm) config() (MCastSwarm, error) {
	c := *s
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Target == "" {
		bad("Target: required (host[:port] of the server)")
	}
	checkFileFields(bad, c.File, c.SHA256, c.Size)
	if c.Receivers < 1 || c.Receivers > MaxMCastReceivers {
		bad("Receivers: %d, want 1..%d", c.Receivers, MaxMCastReceivers)
	}
	switch c.Dialect {
	case "native", "rfc2090":
		if _, _, err := net.SplitHostPort(c.Target); err != nil && c.Target != "" {
			c.Target = net.JoinHostPort(c.Target, "69")
		}
	case "pxe":
		if _, _, err := net.SplitHostPort(c.Target); err != nil && c.Target != "" {
			c.Target = net.JoinHostPort(c.Target, "1759")
		}
		if c.BlockSize != 0 && c.BlockSize != mtftp.PXEBlockSize {
			bad("BlockSize: PXE MTFTP has %d-byte blocks only", mtftp.PXEBlockSize)
		}
	default:
		bad("Dialect: %q, want %s", c.Dialect, strings.Join(Dialects, ", "))
	}
	if c.Dir == "" {
		bad("Dir: required")
	}
	if c.Timeout < 0 || c.MaxTime < 0 {
		bad("Timeout, MaxTime: negative")
	}
	if c.MaxTime == 0 {
		c.MaxTime = DefaultMCastMaxTime
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bench: invalid multicast swarm: %w", errors.Join(errs...))
	}
	return c, nil
}

// Run plays the swarm and returns its report. It returns an error only
// when the swarm cannot start; a swarm cut short by MaxTime or ctx
// returns its report with Stopped set.
func (s *MCastSwarm) Run(ctx context.Context) (MCastReport, error) {
	c, err := s.config()
	if err != nil {
		return MCastReport{}, err
	}
	live := c.Live
	if live == nil {
		live = &MCastLive{}
	}
	rep := MCastReport{
		Schema: MCastReportSchema, Target: c.Target, File: c.File, Dialect: c.Dialect,
		Receivers: c.Receivers, BlockSize: c.BlockSize, SourceAddrs: len(c.SourceAddrs), FileSize: -1, Errors: map[string]int{},
		Verify: verifyText(c.SHA256),
	}
	capCtx, cancel := context.WithTimeout(ctx, c.MaxTime)
	defer cancel()

	var (
		mu        sync.Mutex
		durations []time.Duration
		lastEnd   time.Duration
		seen      = errorSamples{}
	)
	start := time.Now()
	cpu0 := processCPU()
	var wg sync.WaitGroup
	// All receivers are set up before any starts: they start together.
	runs := make([]func() (mcastResult, error), c.Receivers)
	for i := range runs {
		runs[i] = c.receiver(capCtx, i, live)
	}
	for i := range runs {
		wg.Go(func() {
			t0 := time.Now()
			res, err := runs[i]()
			d := time.Since(start)
			if res.dur > 0 {
				d = t0.Sub(start) + res.dur // without the lingering after the last block
			}
			if err == nil {
				err = c.check(res, filepath.Join(c.Dir, receiverFile(i)))
			}
			mu.Lock()
			defer mu.Unlock()
			rep.BytesReceived += res.bytes
			rep.Duplicates += res.dups
			rep.RepairsAsked += res.repairs
			rep.Rebuilt += res.rebuilt
			rep.Lost += res.lost
			rep.Moves += res.moves
			rep.Masters += res.masters
			if err != nil {
				live.Failed.Add(1)
				rep.Failed++
				kind := mcastErrorKind(err, capCtx)
				rep.Errors[kind]++
				rep.ErrorSamples = seen.add(rep.ErrorSamples, err.Error(), fmt.Sprintf("r%03d: %v", i+1, err))
				return
			}
			live.Completed.Add(1)
			rep.Completed++
			if rep.FileSize < 0 {
				rep.FileSize = res.size
			}
			durations = append(durations, d)
			lastEnd = max(lastEnd, d)
		})
	}
	wg.Wait()
	rep.Start = start
	rep.WallSeconds = time.Since(start).Seconds()
	rep.ClientCPUSeconds = processCPU() - cpu0
	if rep.Completed == rep.Receivers {
		rep.AllVerifiedSeconds = lastEnd.Seconds()
	}
	if n := rep.Completed + rep.Failed; n > 0 {
		rep.SuccessRatio = float64(rep.Completed) / float64(n)
	}
	rep.ReceiverMs = latencyOf(durations)
	if rep.FileSize >= 0 {
		rep.BytesNeeded = rep.FileSize * int64(rep.Receivers)
		if rep.BytesNeeded > 0 {
			rep.ReceivedRatio = float64(rep.BytesReceived) / float64(rep.BytesNeeded)
		}
	}
	rep.Stopped = stoppedText(ctx, capCtx, c.MaxTime)
	return rep, nil
}

func receiverFile(i int) string { return fmt.Sprintf("r%03d.bin", i+1) }

// receiver prepares receiver i and returns the function that runs it.
func (c *MCastSwarm) receiver(ctx context.Context, i int, live *MCastLive) func() (mcastResult, error) {
	path := filepath.Join(c.Dir, receiverFile(i))
	open := func() (*os.File, error) {
		return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	}
	var local netip.Addr
	if len(c.SourceAddrs) > 0 {
		local = c.SourceAddrs[i%len(c.SourceAddrs)]
	}
	switch c.Dialect {
	case "native":
		r := &mtftp.NativeReceiver{BlockSize: c.BlockSize, Interface: c.Interface, Timeout: c.Timeout, LocalAddr: local}
		r.Size.Store(-1)
		live.add(&r.Held, &r.Size)
		return func() (mcastResult, error) {
			f, err := open()
			if err != nil {
				return mcastResult{}, err
			}
			defer f.Close()
			res, err := r.Get(ctx, c.Target, c.File, f)
			return mcastResult{
				size: res.Size, bytes: (res.Shards + res.Duplicate) * int64(res.ShardSize), dups: res.Duplicate,
				repairs: res.Naks, rebuilt: res.Rebuilt, lost: res.Lost, moves: res.Moves, sha: res.SHA256,
			}, err
		}
	}
	// The lock-step dialects: RFC 2090 and PXE MTFTP.
	var get func(ctx context.Context, server, remote string, out *os.File) (mtftp.ReceiveResult, error)
	if c.Dialect == "rfc2090" {
		r := &mtftp.RFC2090Receiver{BlockSize: c.BlockSize, Interface: c.Interface, Timeout: c.Timeout, LocalAddr: local}
		r.Size.Store(-1)
		live.add(&r.Held, &r.Size)
		get = r.Get
	} else {
		r := &mtftp.PXEReceiver{Group: c.PXEGroup, Interface: c.Interface, Delay: c.Timeout, LocalAddr: local}
		r.Size.Store(-1)
		live.add(&r.Held, &r.Size)
		get = r.Get
	}
	return func() (mcastResult, error) {
		f, err := open()
		if err != nil {
			return mcastResult{}, err
		}
		defer f.Close()
		res, err := get(ctx, c.Target, c.File, f)
		repairs := res.Requests
		if c.Dialect == "pxe" {
			repairs = max(res.Requests-1, 0) // the first open is no repair
		}
		return mcastResult{size: res.Size, bytes: res.Bytes, dups: res.Duplicates, repairs: repairs, masters: res.Masters, dur: res.Duration}, err
	}
}

// check compares a receiver's file with what was expected.
func (c *MCastSwarm) check(res mcastResult, path string) error {
	if c.Size > 0 && res.size != c.Size {
		return &verifyError{ErrKindSize, fmt.Sprintf("received %d bytes, want %d", res.size, c.Size)}
	}
	if c.SHA256 == nil {
		return nil
	}
	sum := res.sha
	if sum == "" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		sum = hex.EncodeToString(h.Sum(nil))
	}
	if want := hex.EncodeToString(c.SHA256); sum != want {
		return &verifyError{ErrKindVerify, fmt.Sprintf("sha256 %s, want %s (%d bytes)", sum, want, res.size)}
	}
	return nil
}

// mcastErrorKind names a receiver's failure for MCastReport.Errors.
func mcastErrorKind(err error, ctx context.Context) string {
	switch {
	case errors.Is(err, mtftp.ErrNativeUnsupported), errors.Is(err, mtftp.ErrMulticastRefused):
		return ErrKindUnsupported
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return "cancelled"
	// The native receiver's silence errors carry no sentinel:
	// "nothing from the server for ..." and "no answer from ...".
	case strings.Contains(err.Error(), "nothing from the server") || strings.Contains(err.Error(), "no answer from"):
		return ErrKindTimeout
	}
	return ErrorKind(err)
}
