package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

// Defaults and limits of TFTPSwarm.
const (
	// MaxTFTPClients bounds one swarm: each client holds a socket (a file
	// descriptor and up to 8 MiB of receive buffer) while it runs.
	MaxTFTPClients = 4096
	// MaxTransfersPerClient bounds the downloads one client makes, so a
	// swarm stops by itself in count as well as in time.
	MaxTransfersPerClient = 100_000
	// DefaultTFTPMaxTime caps a swarm without Duration: it stops by itself
	// even against a server that answers nothing or crawls.
	DefaultTFTPMaxTime = 10 * time.Minute
	// maxErrorSamples bounds TFTPReport.ErrorSamples.
	maxErrorSamples = 10
	// TFTPReportSchema names the JSON layout of TFTPReport (docs/bench-json.md).
	TFTPReportSchema = "mtftpd-bench-tftp/1"
)

// Failure causes, the keys of TFTPReport.Errors. A refusal by the server
// is "remote_<code>" with the RFC 1350 error code (remote_1 = file not
// found, remote_2 = access violation, remote_0 = not defined: tftpd-hpa and
// mtftpd use it for "too many sessions" and the like).
const (
	ErrKindTimeout  = "timeout"       // the server stopped answering (the client's retries ran out)
	ErrKindVerify   = "verify"        // the bytes received do not have the expected sha256
	ErrKindSize     = "size_mismatch" // fewer or more bytes than the size announced or expected
	ErrKindProtocol = "protocol"      // a bad OACK or packet from the server
	ErrKindSocket   = "socket"        // the client's socket could not be opened or used
	// mtftpd's refusals for want of a session slot (tftp.MsgAddressBusy,
	// tftp.MsgServerBusy): every slot of the client's address is taken
	// (tftp.max_per_client), or every slot (tftp.max_sessions).
	ErrKindBusyAddress  = "busy_address"
	ErrKindBusyServer   = "busy_server"
	ErrKindRemotePrefix = "remote_"
)

// Profile is how one simulated client asks for a file: the options of its
// RRQ and whether it probes the size first.
type Profile struct {
	Name       string `json:"name"`
	BlockSize  int    `json:"blksize"`    // 0: no blksize option (512)
	WindowSize int    `json:"windowsize"` // 0: no windowsize option (lock-step)
	TSize      bool   `json:"tsize"`      // tsize=0 in the download's RRQ
	// Probe sends a first RRQ with tsize and aborts it with ERROR 8 after
	// the OACK, then downloads with a second RRQ (UEFI firmware).
	Probe bool `json:"tsize_probe"`
}

// Profiles are the firmware-like clients of `mtftpd bench tftp`, from what
// the clients send on the wire (docs/lab-notes.md, "What the clients send").
var Profiles = map[string]Profile{
	// A plain BIOS PXE ROM: one block of a full Ethernet frame at a time.
	"bios": {Name: "bios", BlockSize: 1468},
	// OVMF UEFI PXE: RRQ tsize=0 blksize=1468 windowsize=4, ERROR 8 after
	// the OACK, then RRQ blksize=1468 windowsize=4.
	"uefi": {Name: "uefi", BlockSize: 1468, WindowSize: 4, Probe: true},
	// iPXE: blksize=1432 tsize=0, lock-step.
	"ipxe": {Name: "ipxe", BlockSize: 1432, TSize: true},
	// A Linux tool at full speed (atftp --option "blksize 65464"
	// --option "windowsize 64"): IP fragments, big windows.
	"linux": {Name: "linux", BlockSize: 65464, WindowSize: 64},
}

// ProfileNames lists the profiles in the order the help shows them.
var ProfileNames = []string{"bios", "uefi", "ipxe", "linux", "custom"}

// CustomProfile checks the options of a "custom" profile.
func CustomProfile(blksize, windowsize int, tsize, probe bool) (Profile, error) {
	if blksize != 0 && (blksize < tftp.MinBlockSize || blksize > tftp.MaxBlockSize) {
		return Profile{}, fmt.Errorf("blksize %d is outside %d..%d", blksize, tftp.MinBlockSize, tftp.MaxBlockSize)
	}
	if windowsize < 0 || windowsize > tftp.MaxWindowSize {
		return Profile{}, fmt.Errorf("windowsize %d is outside 1..%d", windowsize, tftp.MaxWindowSize)
	}
	return Profile{Name: "custom", BlockSize: blksize, WindowSize: windowsize, TSize: tsize, Probe: probe}, nil
}

// TFTPSwarm plays Clients TFTP clients against one server at Target: each
// opens its own socket (on one of SourceAddrs, round robin, if given; the
// batch Engine shares a few sockets instead) and downloads File as
// Profile says, once, or again and again until Duration passes. Configure it through its fields; a zero field means the
// documented default. Every datagram goes to Target's address only.
type TFTPSwarm struct {
	Target  string // host:port of the server; required
	File    string // the file to download; required
	Clients int    // 1..MaxTFTPClients
	Profile Profile
	// Ramp spreads the clients' starts evenly over this time (client i
	// starts at i×Ramp/Clients); 0 starts them all at once.
	Ramp time.Duration
	// Duration, if set, makes every client download again and again until
	// it passes; transfers still running then are cancelled and counted
	// as Cancelled, not failed. 0: each client downloads Transfers times.
	Duration time.Duration
	// Transfers is the downloads per client without Duration; 0 = 1, at
	// most MaxTransfersPerClient.
	Transfers int
	// MaxTime caps the whole swarm (Duration included); 0 =
	// DefaultTFTPMaxTime, or Duration + Ramp + 1 min with Duration.
	MaxTime time.Duration
	// SHA256, if set, is the expected digest of the file: every completed
	// download is hashed and compared.
	SHA256 []byte
	// Size, if > 0, is the expected size in bytes (0: unknown). A
	// download of another length fails with ErrKindSize; so does one that
	// differs from the size the server announced (tsize).
	Size int64
	// SourceAddrs are the local addresses client sockets bind to: client i
	// uses SourceAddrs[i mod len]. Empty: the kernel picks.
	SourceAddrs []netip.Addr
	// Timeout is each client's first retransmission timeout and Retries
	// its consecutive-timeout limit; 0 = the tftp.Client defaults.
	Timeout time.Duration
	Retries int
	// Live, if set, is updated while the swarm runs (for a progress
	// display).
	Live *TFTPLive
	// Engine plays the clients: EngineGoroutine (""), a goroutine, a
	// socket and a tftp.Client per client; or EngineBatch (Linux), a few
	// shared sockets and event loops with batched I/O, for lock-step
	// profiles (tftp_batch_linux.go).
	Engine string
}

// The engines of TFTPSwarm.Engine.
const (
	EngineGoroutine = "goroutine"
	EngineBatch     = "batch"
)

// EngineNames lists the engines in the order the help shows them.
var EngineNames = []string{EngineGoroutine, EngineBatch}

// TFTPLive holds running totals of a swarm, safe to read at any time.
type TFTPLive struct {
	Bytes     atomic.Int64 // payload bytes received in order, all transfers
	Completed atomic.Int64 // downloads finished and verified
	Failed    atomic.Int64
	Active    atomic.Int64 // downloads running
}

// TFTPReport is what a swarm saw. It is plain data and marshals to JSON as
// is (docs/bench-json.md documents every field).
type TFTPReport struct {
	Schema  string  `json:"schema"`
	Target  string  `json:"target"`
	File    string  `json:"file"`
	Profile Profile `json:"profile"`
	// Engine is the swarm's engine (TFTPSwarm.Engine); reports written
	// before it existed lack it: the goroutine engine.
	Engine      string `json:"engine,omitempty"`
	Clients     int    `json:"clients"`
	SourceAddrs int    `json:"source_addrs"`
	// SourceSpread says how the clients were spread when the swarm chose
	// their addresses itself (a loopback target: LoopbackSpread).
	SourceSpread string    `json:"source_spread,omitempty"`
	RampSeconds  float64   `json:"ramp_seconds"`
	Duration     float64   `json:"duration_seconds"` // 0: one pass (Transfers per client)
	Verify       string    `json:"verify,omitempty"` // "sha256:<hex>" when downloads were checked
	Start        time.Time `json:"start"`
	// WallSeconds runs from the first client's start to the end of the
	// last transfer.
	WallSeconds float64 `json:"wall_seconds"`
	// ClientCPUSeconds is the CPU time (user + system) the swarm's own
	// process used during the run: near WallSeconds × cores, the load
	// generator, not the server, is the limit.
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// FileSize is the size of the file as received (the first completed
	// download), -1 if none completed.
	FileSize int64 `json:"file_size"`

	Transfers int `json:"transfers"` // downloads begun
	Completed int `json:"completed"` // finished, right size, verified if asked
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"` // cut by the end of Duration (or the caller), not failures
	// SuccessRatio is Completed / (Completed + Failed); 0 without either.
	SuccessRatio float64 `json:"success_ratio"`
	// Bytes counts every payload byte received in order, by completed,
	// failed and cancelled transfers alike; AggregateMBps is Bytes / 1e6
	// / WallSeconds: what the server delivered to the swarm.
	Bytes         int64   `json:"bytes"`
	AggregateMBps float64 `json:"aggregate_mbps"`
	// TransferMs is the duration of completed downloads (first request,
	// probe included, to the last block); TransferMBps their rates.
	TransferMs   Latency `json:"transfer_ms"`
	TransferMBps Rates   `json:"transfer_mbps"`

	// Retransmits seen by the clients: DATA blocks received twice
	// (Duplicates) or ahead of a gap (OutOfOrder), and client timeouts
	// (each resends an ACK or the request).
	Duplicates int `json:"duplicates"`
	OutOfOrder int `json:"out_of_order"`
	Timeouts   int `json:"timeouts"`
	// Errors counts failed transfers by cause (the ErrKind* constants);
	// ErrorSamples holds the first distinct messages.
	Errors       map[string]int `json:"errors"`
	ErrorSamples []string       `json:"error_samples,omitempty"`
	// Negotiated counts completed downloads by the "blksize/windowsize"
	// the server granted.
	Negotiated map[string]int `json:"negotiated"`
	// Stopped says why the swarm ended early: MaxTime or the caller.
	Stopped string `json:"stopped,omitempty"`
}

// Rates is a distribution of per-transfer rates in MB/s (nearest-rank
// percentiles: P5 is the slow end).
type Rates struct {
	P5   float64 `json:"p5"`
	P50  float64 `json:"p50"`
	Mean float64 `json:"mean"`
}

// config returns a copy with the defaults filled in, or every problem
// with its field's name.
func (s *TFTPSwarm) config() (TFTPSwarm, error) {
	c := *s
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Target == "" {
		bad("Target: required (host:port of the server)")
	} else if _, _, err := splitTarget(c.Target); err != nil {
		bad("Target: %v", err)
	}
	checkFileFields(bad, c.File, c.SHA256, c.Size)
	if c.Clients < 1 || c.Clients > MaxTFTPClients {
		bad("Clients: %d, want 1..%d", c.Clients, MaxTFTPClients)
	}
	if c.Profile.Name == "" {
		bad("Profile: required (%s)", strings.Join(ProfileNames, ", "))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Ramp", c.Ramp}, {"Duration", c.Duration}, {"MaxTime", c.MaxTime}, {"Timeout", c.Timeout}} {
		if d.v < 0 {
			bad("%s: %v is negative", d.name, d.v)
		}
	}
	switch {
	case c.Transfers < 0 || c.Transfers > MaxTransfersPerClient:
		bad("Transfers: %d, want 0..%d", c.Transfers, MaxTransfersPerClient)
	case c.Transfers == 0 || c.Duration > 0:
		if c.Duration > 0 {
			c.Transfers = MaxTransfersPerClient
		} else {
			c.Transfers = 1
		}
	}
	if c.Retries < 0 {
		bad("Retries: %d is negative", c.Retries)
	}
	if host, _, err := splitTarget(c.Target); err == nil && len(c.SourceAddrs) == 0 && c.Clients > 1 {
		c.SourceAddrs = LoopbackSpread(host, c.Clients)
	}
	switch c.Engine {
	case "", EngineGoroutine:
		c.Engine = EngineGoroutine
	case EngineBatch:
		checkBatch(bad, c)
	default:
		bad("Engine: %q, want %s", c.Engine, strings.Join(EngineNames, " or "))
	}
	if c.MaxTime == 0 {
		c.MaxTime = DefaultTFTPMaxTime
		if c.Duration > 0 {
			c.MaxTime = c.Duration + c.Ramp + time.Minute
		}
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bench: invalid TFTP swarm: %w", errors.Join(errs...))
	}
	return c, nil
}

// splitTarget checks host:port (a port is required: bench never guesses
// where to send).
func splitTarget(t string) (host, port string, err error) {
	i := strings.LastIndexByte(t, ':')
	if i <= 0 || i == len(t)-1 {
		return "", "", fmt.Errorf("%q is not host:port", t)
	}
	return t[:i], t[i+1:], nil
}

// swarmRun is one run's shared state.
type swarmRun struct {
	c    TFTPSwarm
	live *TFTPLive

	mu        sync.Mutex
	rep       TFTPReport
	durations []time.Duration
	rates     []float64
	seenErrs  errorSamples
}

// Run plays the swarm and returns its report. It returns an error only
// when the swarm cannot start (invalid fields); a swarm cut short by
// MaxTime or ctx returns its report with Stopped set.
func (s *TFTPSwarm) Run(ctx context.Context) (TFTPReport, error) {
	c, err := s.config()
	if err != nil {
		return TFTPReport{}, err
	}
	r := &swarmRun{c: c, live: c.Live, seenErrs: errorSamples{}}
	if r.live == nil {
		r.live = &TFTPLive{}
	}
	r.rep = TFTPReport{
		Schema: TFTPReportSchema, Target: c.Target, File: c.File, Profile: c.Profile, Engine: c.Engine,
		Clients: c.Clients, SourceAddrs: len(c.SourceAddrs), RampSeconds: c.Ramp.Seconds(),
		SourceSpread: spreadText(s.SourceAddrs, c.SourceAddrs),
		Duration:     c.Duration.Seconds(), FileSize: -1,
		Errors: map[string]int{}, Negotiated: map[string]int{}, Verify: verifyText(c.SHA256),
	}

	capCtx, cancelCap := context.WithTimeout(ctx, c.MaxTime)
	defer cancelCap()
	// runCtx ends with Duration: transfers running then are cancelled.
	runCtx, cancelRun := capCtx, context.CancelFunc(func() {})
	start := time.Now()
	if c.Duration > 0 {
		runCtx, cancelRun = context.WithDeadline(capCtx, start.Add(c.Ramp+c.Duration))
	}
	defer cancelRun()

	cpu0 := processCPU()
	if c.Engine == EngineBatch {
		if err := r.runBatch(runCtx, start); err != nil {
			return TFTPReport{}, err
		}
	} else {
		r.runGoroutines(runCtx, start)
	}
	wall := time.Since(start)
	cpu := processCPU() - cpu0

	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.rep
	rep.Start = start
	rep.ClientCPUSeconds = cpu
	rep.WallSeconds = wall.Seconds()
	if rep.WallSeconds > 0 {
		rep.AggregateMBps = float64(rep.Bytes) / 1e6 / rep.WallSeconds
	}
	if n := rep.Completed + rep.Failed; n > 0 {
		rep.SuccessRatio = float64(rep.Completed) / float64(n)
	}
	rep.TransferMs = latencyOf(r.durations)
	rep.TransferMBps = ratesOf(r.rates)
	rep.Stopped = stoppedText(ctx, capCtx, c.MaxTime)
	return rep, nil
}

// runGoroutines plays the swarm with the goroutine engine: one goroutine
// and one tftp.Client per client.
func (r *swarmRun) runGoroutines(ctx context.Context, start time.Time) {
	c := r.c
	var wg sync.WaitGroup
	for i := range c.Clients {
		wg.Go(func() {
			if c.Ramp > 0 {
				t := time.NewTimer(time.Until(c.startAt(start, i)))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
			r.client(ctx, i)
		})
	}
	wg.Wait()
}

// startAt is when client i starts: i×Ramp/Clients after start.
func (c *TFTPSwarm) startAt(start time.Time, i int) time.Time {
	return start.Add(c.Ramp * time.Duration(i) / time.Duration(c.Clients))
}

// client runs client i's downloads until its count or ctx ends.
func (r *swarmRun) client(ctx context.Context, i int) {
	c := r.c
	cl := &tftp.Client{
		BlockSize: c.Profile.BlockSize, WindowSize: c.Profile.WindowSize, TSize: c.Profile.TSize,
		Timeout: c.Timeout, Retries: c.Retries,
	}
	if len(c.SourceAddrs) > 0 {
		cl.LocalAddr = c.SourceAddrs[i%len(c.SourceAddrs)]
	}
	for range c.Transfers {
		if ctx.Err() != nil {
			return
		}
		r.transfer(ctx, cl)
	}
}

// transfer makes one download (with its size probe, if the profile has
// one) and records it.
func (r *swarmRun) transfer(ctx context.Context, cl *tftp.Client) {
	r.begin()

	start := time.Now()
	var seen int64 // bytes of this transfer already added to Live
	cl.Progress = func(got, _ int64) {
		r.live.Bytes.Add(got - seen)
		seen = got
	}
	var h hash.Hash
	var w io.Writer = io.Discard
	if r.c.SHA256 != nil {
		h = sha256.New()
		w = h
	}
	announced := int64(-1)
	var res tftp.GetResult
	var err error
	if r.c.Profile.Probe {
		announced, err = cl.ProbeSize(ctx, r.c.Target, r.c.File)
	}
	if err == nil {
		res, err = cl.Get(ctx, r.c.Target, r.c.File, w)
		if res.TSize >= 0 {
			announced = res.TSize
		}
	}
	d := time.Since(start)
	if err == nil {
		err = r.check(res.Bytes, announced, h)
	}
	r.record(res, d, err, ctx.Err() != nil)
}

// begin counts a download begun, by either engine.
func (r *swarmRun) begin() {
	r.live.Active.Add(1)
	r.mu.Lock()
	r.rep.Transfers++
	r.mu.Unlock()
}

// record adds a download that begin counted and that ended after d: its
// counts (res: Bytes, Duplicates, OutOfOrder, Timeouts, and BlockSize and
// WindowSize granted), and err, nil if it completed and verified. One cut
// short (cancelled: by the end of Duration or the caller) is not a
// failure, whatever err says: the server is not to blame. The engine
// adds the bytes to Live itself, as they come.
func (r *swarmRun) record(res tftp.GetResult, d time.Duration, err error, cancelled bool) {
	r.live.Active.Add(-1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Bytes += res.Bytes
	r.rep.Duplicates += res.Duplicates
	r.rep.OutOfOrder += res.OutOfOrder
	r.rep.Timeouts += res.Timeouts
	if err != nil {
		if cancelled {
			r.rep.Cancelled++
			return
		}
		r.live.Failed.Add(1)
		r.rep.Failed++
		r.rep.Errors[ErrorKind(err)]++
		r.rep.ErrorSamples = r.seenErrs.add(r.rep.ErrorSamples, err.Error(), err.Error())
		return
	}
	r.live.Completed.Add(1)
	r.rep.Completed++
	if r.rep.FileSize < 0 {
		r.rep.FileSize = res.Bytes
	}
	r.rep.Negotiated[fmt.Sprintf("%d/%d", res.BlockSize, res.WindowSize)]++
	r.durations = append(r.durations, d)
	if d > 0 {
		r.rates = append(r.rates, float64(res.Bytes)/1e6/d.Seconds())
	}
}

// verifyError is a completed download with the wrong content or size.
type verifyError struct {
	kind string
	msg  string
}

func (e *verifyError) Error() string { return e.msg }

// check compares a finished download with what was expected.
func (r *swarmRun) check(got, announced int64, h hash.Hash) error {
	if r.c.Size > 0 && got != r.c.Size {
		return &verifyError{ErrKindSize, fmt.Sprintf("received %d bytes, want %d", got, r.c.Size)}
	}
	if announced >= 0 && got != announced {
		return &verifyError{ErrKindSize, fmt.Sprintf("received %d bytes, the server announced %d", got, announced)}
	}
	if h != nil {
		if sum := h.Sum(nil); !bytes.Equal(sum, r.c.SHA256) {
			return &verifyError{ErrKindVerify, fmt.Sprintf("sha256 %x, want %x (%d bytes)", sum, r.c.SHA256, got)}
		}
	}
	return nil
}

// ErrorKind names the cause of a failed transfer for TFTPReport.Errors.
func ErrorKind(err error) string {
	var re *tftp.RemoteError
	var ve *verifyError
	switch {
	case errors.As(err, &ve):
		return ve.kind
	case errors.As(err, &re) && tftp.IsBusy(err) && re.Message == tftp.MsgAddressBusy:
		return ErrKindBusyAddress
	case errors.As(err, &re) && tftp.IsBusy(err):
		return ErrKindBusyServer
	case errors.As(err, &re):
		return fmt.Sprintf("%s%d", ErrKindRemotePrefix, uint16(re.Code))
	case errors.Is(err, tftp.ErrNoAnswer):
		return ErrKindTimeout
	}
	var oe *net.OpError
	var se *os.SyscallError
	if errors.As(err, &oe) || errors.As(err, &se) {
		return ErrKindSocket
	}
	// What is left is the client refusing what the server sent: a
	// malformed packet or an OACK with options it did not ask for.
	return ErrKindProtocol
}

// ratesOf summarises per-transfer rates.
func ratesOf(v []float64) Rates {
	if len(v) == 0 {
		return Rates{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	k := (5*len(s) + 99) / 100 // nearest rank: ceil(5 % of n)
	return Rates{P5: s[max(k-1, 0)], P50: s[max((len(s)+1)/2-1, 0)], Mean: sum / float64(len(s))}
}

// ParseSourceAddrs parses a list of source addresses: comma-separated
// IPv4 addresses, ranges "A-B" and prefixes "A/N" (every host address of
// the prefix, without the network and broadcast addresses of a /30 or
// wider). At most MaxTFTPClients addresses.
func ParseSourceAddrs(list string) ([]netip.Addr, error) {
	var out []netip.Addr
	add := func(a netip.Addr) error {
		if len(out) >= MaxTFTPClients {
			return fmt.Errorf("source addresses: more than %d", MaxTFTPClients)
		}
		out = append(out, a)
		return nil
	}
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		switch {
		case strings.Contains(item, "/"):
			p, err := netip.ParsePrefix(item)
			if err != nil || !p.Addr().Is4() {
				return nil, fmt.Errorf("source addresses: %q is not an IPv4 prefix", item)
			}
			p = p.Masked()
			first, last := p.Addr(), lastAddr(p)
			if p.Bits() <= 30 {
				first, last = first.Next(), last.Prev()
			}
			for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
				if err := add(a); err != nil {
					return nil, err
				}
			}
		case strings.Contains(item, "-"):
			lo, hi, _ := strings.Cut(item, "-")
			a, err1 := netip.ParseAddr(strings.TrimSpace(lo))
			b, err2 := netip.ParseAddr(strings.TrimSpace(hi))
			if err1 != nil || err2 != nil || !a.Is4() || !b.Is4() || b.Less(a) {
				return nil, fmt.Errorf("source addresses: %q is not an IPv4 range A-B with A ≤ B", item)
			}
			for ; a.IsValid() && a.Compare(b) <= 0; a = a.Next() {
				if err := add(a); err != nil {
					return nil, err
				}
			}
		default:
			a, err := netip.ParseAddr(item)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("source addresses: %q is not an IPv4 address", item)
			}
			if err := add(a); err != nil {
				return nil, err
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("source addresses: the list is empty")
	}
	return out, nil
}

// lastAddr is the highest address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// ParseSHA256 parses "sha256:HEX" (or bare HEX) into a digest.
func ParseSHA256(s string) ([]byte, error) {
	hexs := strings.TrimPrefix(s, "sha256:")
	b, err := hex.DecodeString(hexs)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("verify: %q is not sha256:<64 hex digits>", s)
	}
	return b, nil
}
