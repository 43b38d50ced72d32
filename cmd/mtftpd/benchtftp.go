package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mtftpd/mtftpd/bench"
)

const benchTFTPAbout = `Profiles (what each simulated client sends):
  bios    RRQ blksize=1468, lock-step (a PXE ROM)
  uefi    RRQ tsize=0 blksize=1468 windowsize=4, ERROR 8 after the OACK,
          then RRQ blksize=1468 windowsize=4 (OVMF)
  ipxe    RRQ blksize=1432 tsize=0, lock-step
  linux   RRQ blksize=65464 windowsize=64
  custom  --blksize, --windowsize, --tsize, --tsize-probe (the default)
`

func runBenchTFTP(args []string) error {
	fs := newFlags("bench tftp")
	target := fs.String("target", "", "server HOST:PORT (required; every datagram goes there and nowhere else)")
	file := fs.String("file", "", "file to download (required)")
	clients := fs.Int("clients", 1, fmt.Sprintf("simulated clients, each with its own socket (1..%d)", bench.MaxTFTPClients))
	profile := fs.String("profile", "custom", "client profile: "+strings.Join(bench.ProfileNames, ", "))
	blksize := fs.Int("blksize", 0, "custom: ask for this block size (8..65464); 0 = 512, no option")
	window := fs.Int("windowsize", 0, "custom: ask for this window (RFC 7440); 0 = lock-step, no option")
	tsize := fs.Bool("tsize", false, "custom: ask for tsize in the download's RRQ")
	probe := fs.Bool("tsize-probe", false, "custom: probe the size first (RRQ with tsize, ERROR 8 after the OACK), like UEFI")
	ramp := fs.Duration("ramp", 0, "spread the clients' starts over this time")
	duration := fs.Duration("duration", 0, "repeat downloads until this much time has passed (0: each client downloads --count times)")
	count := fs.Int("count", 1, fmt.Sprintf("downloads per client without --duration (1..%d)", bench.MaxTransfersPerClient))
	maxTime := fs.Duration("max-time", 0, "cap of the whole run (0: 10m, or duration + ramp + 1m)")
	verify := fs.String("verify", "", "check every download: sha256:HEX")
	verifyFile := fs.String("verify-file", "", "check every download against this local copy (sha256 and size)")
	sources := fs.String("source-addrs", "", "bind client sockets to these local addresses, round robin: A,B,A-B,A/N")
	timeout := fs.Duration("timeout", 0, "each client's first retransmission timeout (0: 1s; adapts)")
	retries := fs.Int("retries", 0, "consecutive timeouts before a client gives up (0: the client default)")
	engine := fs.String("engine", bench.EngineGoroutine, "load generator: goroutine (a socket and goroutine per client), or batch (Linux, lock-step IPv4: shared sockets, recvmmsg/sendmmsg; far less CPU per block)")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file (- for stdout); schema: docs/bench-json.md")
	quiet := fs.BoolP("quiet", "q", false, "no progress display")
	if _, help, err := parseArgs(fs, args, 0, ""); help || err != nil {
		return err
	}
	if *target == "" || *file == "" {
		return errors.New("tftp: --target HOST:PORT and --file NAME are required")
	}
	var prof bench.Profile
	if *profile == "custom" {
		var err error
		if prof, err = bench.CustomProfile(*blksize, *window, *tsize, *probe); err != nil {
			return fmt.Errorf("tftp: --profile custom: %w", err)
		}
	} else {
		p, ok := bench.Profiles[*profile]
		if !ok {
			return fmt.Errorf("tftp: unknown --profile %q (want %s)", *profile, strings.Join(bench.ProfileNames, ", "))
		}
		for _, name := range []string{"blksize", "windowsize", "tsize", "tsize-probe"} {
			if fs.Changed(name) {
				return fmt.Errorf("tftp: --%s sets the options of --profile custom; --profile %s fixes them", name, *profile)
			}
		}
		prof = p
	}
	if *count < 1 || *count > bench.MaxTransfersPerClient {
		return fmt.Errorf("tftp: --count %d is outside 1..%d", *count, bench.MaxTransfersPerClient)
	}
	if fs.Changed("count") && *duration > 0 {
		return errors.New("tftp: --count and --duration exclude each other (with --duration clients repeat until it ends)")
	}
	s := &bench.TFTPSwarm{
		Target: *target, File: *file, Clients: *clients, Profile: prof, Ramp: *ramp,
		Duration: *duration, Transfers: *count, MaxTime: *maxTime, Timeout: *timeout, Retries: *retries,
		Live: &bench.TFTPLive{}, Engine: *engine,
	}
	var err error
	if s.SourceAddrs, s.SHA256, s.Size, err = parseSwarmChecks(*sources, *verify, *verifyFile); err != nil {
		return fmt.Errorf("tftp: %w", err)
	}

	return benchRun[bench.TFTPReport]{
		quiet: *quiet, jsonOut: *jsonOut, run: s.Run, print: printTFTPReport,
		display: func(ctx context.Context, w io.Writer, tty bool) *swarmDisplay {
			return startSwarmDisplay(ctx, w, s, tty)
		},
		check: func(rep bench.TFTPReport) error {
			if rep.Failed > 0 || rep.Completed == 0 {
				return fmt.Errorf("tftp: %d of %d downloads failed, %d completed", rep.Failed, rep.Transfers, rep.Completed)
			}
			return nil
		},
	}.do()
}

// sha256File returns the digest and size of a local file.
func sha256File(path string) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, 0, err
	}
	return h.Sum(nil), n, nil
}

// swarmDisplay shows a swarm's progress: mpb bars on a terminal, a plain
// line every 2 s otherwise (logs, CI).
type swarmDisplay struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startSwarmDisplay(ctx context.Context, w io.Writer, s *bench.TFTPSwarm, tty bool) *swarmDisplay {
	live := s.Live
	start := time.Now()
	status := func() string {
		el := time.Since(start).Seconds()
		mbps := 0.0
		if el > 0 {
			mbps = float64(live.Bytes.Load()) / 1e6 / el
		}
		return fmt.Sprintf("done %d  failed %d  active %d  %.1f MB/s",
			live.Completed.Load(), live.Failed.Load(), live.Active.Load(), mbps)
	}
	// With --duration: a bar of time. One pass: a bar of bytes when the
	// size is known (--verify-file), else of finished downloads.
	total, label := int64(s.Clients*s.Transfers), "downloads"
	bytes := s.Duration == 0 && s.Size > 0
	switch {
	case s.Duration > 0:
		total, label = int64((s.Ramp+s.Duration)/time.Millisecond), "time"
	case bytes:
		total, label = total*s.Size, "bytes"
	}
	progress := func() (int64, int64) {
		switch {
		case s.Duration > 0:
			return min(int64(time.Since(start)/time.Millisecond), total), total
		case bytes:
			return min(live.Bytes.Load(), total), total
		}
		return live.Completed.Load() + live.Failed.Load(), total
	}
	return startLiveDisplay(ctx, w, tty, "bench tftp", fmt.Sprintf("%s x%d %s ", s.File, s.Clients, label), progress, status)
}

// stop ends the display and waits until it has drawn its last line.
func (d *swarmDisplay) stop() {
	d.cancel()
	<-d.done
}

// printTFTPReport writes the short human summary.
func printTFTPReport(w io.Writer, r bench.TFTPReport) {
	p := r.Profile
	fmt.Fprintf(w, "tftp swarm: %d clients x %s from %s, profile %s (blksize %d, windowsize %d, tsize %v, probe %v), engine %s\n",
		r.Clients, r.File, r.Target, p.Name, p.BlockSize, p.WindowSize, p.TSize, p.Probe, cmp.Or(r.Engine, bench.EngineGoroutine))
	verified := ""
	if r.Verify != "" {
		verified = ", verified"
	}
	fmt.Fprintf(w, "  %d/%d downloads completed%s, %d failed, %d cancelled; success %.1f %%; file %d bytes\n",
		r.Completed, r.Transfers, verified, r.Failed, r.Cancelled, 100*r.SuccessRatio, r.FileSize)
	fmt.Fprintf(w, "  aggregate %.1f MB/s (%d bytes in %.3f s, bench CPU %.2f s); per download MB/s p5 %.1f  p50 %.1f\n",
		r.AggregateMBps, r.Bytes, r.WallSeconds, r.ClientCPUSeconds, r.TransferMBps.P5, r.TransferMBps.P50)
	l := r.TransferMs
	fmt.Fprintf(w, "  download ms: p50 %.1f  p95 %.1f  p99 %.1f  max %.1f\n", l.P50, l.P95, l.P99, l.Max)
	fmt.Fprintf(w, "  retransmits seen: %d duplicate, %d out-of-order blocks; %d client timeouts; negotiated %s\n",
		r.Duplicates, r.OutOfOrder, r.Timeouts, counts(r.Negotiated))
	fmt.Fprintf(w, "  errors: %s\n", counts(r.Errors))
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "    %s\n", e)
	}
	if r.SourceSpread != "" {
		fmt.Fprintf(w, "  %s\n", r.SourceSpread)
	}
	for _, h := range r.LimitHints() {
		fmt.Fprintf(w, "  limit: %s\n", h)
	}
	if r.Stopped != "" {
		fmt.Fprintf(w, "  stopped early: %s\n", r.Stopped)
	}
}

func runBenchCompare(args []string) error {
	fs := newFlags("bench compare")
	pos, help, err := parseArgs(fs, args, 2, "need two JSON reports")
	if help || err != nil {
		return err
	}
	a, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	b, err := os.ReadFile(pos[1])
	if err != nil {
		return err
	}
	kind, figs, err := bench.Compare(a, b)
	if err != nil {
		return err
	}
	fmt.Printf("bench %s: A = %s, B = %s\n", kind, pos[0], pos[1])
	fmt.Printf("%-18s %14s %14s %9s  %s\n", "figure", "A", "B", "B/A", "better")
	for _, f := range figs {
		ratio := "n/a"
		if r, ok := f.Ratio(); ok {
			ratio = fmt.Sprintf("%.2fx", r)
		}
		fmt.Printf("%-18s %14.6g %14.6g %9s  %s\n", f.Name, f.A, f.B, ratio, f.Better())
	}
	return nil
}
