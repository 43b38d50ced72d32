package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/mtftpd/mtftpd/bench"
)

const benchMCastAbout = `N multicast receivers in this process, started together, download one file
from one server; the report gives the time until all hold the verified file.

Dialects:
  native   mtftpd's own (RRQ with x-mtftpd to port 69; NAKs, parity repairs)
  rfc2090  the RFC 2090 multicast option (to port 69; master ACKs, promotion)
  pxe      PXE MTFTP (to port 1759; listen, open, lock-step ACKs, re-open)
`

func runBenchMCast(args []string) error {
	fs := newFlags("bench mcast")
	target := fs.String("target", "", "server HOST[:PORT] (required; port 69, or 1759 for pxe)")
	file := fs.String("file", "", "file to download (required)")
	receivers := fs.Int("receivers", 1, fmt.Sprintf("receivers in this process (1..%d)", bench.MaxMCastReceivers))
	dialect := fs.String("dialect", "native", "multicast dialect: "+strings.Join(bench.Dialects, ", "))
	dir := fs.String("dir", "", "directory for the receivers' files (default: a temp dir, removed unless --keep)")
	keep := fs.Bool("keep", false, "keep the receivers' files")
	duration := fs.Duration("duration", 0, "cap of the whole run (0: 10m)")
	timeout := fs.Duration("timeout", 0, "silence from the server each receiver tolerates (0: the dialect's default)")
	blksize := fs.Int("blksize", 0, "native, rfc2090: block size asked for (0: 1468 native, 1428 rfc2090)")
	iface := fs.String("iface", "", "interface to join the group on (default: the one the server is reached by)")
	sources := fs.String("source-addrs", "", "send from these local addresses, round robin (A,B,A-B,A/N): servers cap transfers per client address")
	pxeGroup := fs.String("pxe-group", "", "pxe: group and client port of the file (default 239.255.1.1:3001, iPXE's)")
	verify := fs.String("verify", "", "check every file: sha256:HEX")
	verifyFile := fs.String("verify-file", "", "check every file against this local copy (sha256 and size)")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file (- for stdout); schema: docs/bench-json.md")
	quiet := fs.BoolP("quiet", "q", false, "no progress display")
	if _, help, err := parseArgs(fs, args, 0, ""); help || err != nil {
		return err
	}
	if *target == "" || *file == "" {
		return errors.New("mcast: --target HOST[:PORT] and --file NAME are required")
	}
	s := &bench.MCastSwarm{
		Target: *target, File: *file, Receivers: *receivers, Dialect: *dialect, Dir: *dir,
		BlockSize: *blksize, Interface: *iface, Timeout: *timeout, MaxTime: *duration, Live: &bench.MCastLive{},
	}
	var err error
	if s.SourceAddrs, s.SHA256, s.Size, err = parseSwarmChecks(*sources, *verify, *verifyFile); err != nil {
		return fmt.Errorf("mcast: %w", err)
	}
	if *pxeGroup != "" {
		g, err := netip.ParseAddrPort(*pxeGroup)
		if err != nil {
			return fmt.Errorf("mcast: --pxe-group: %w", err)
		}
		s.PXEGroup = g
	}
	if s.Dir == "" {
		d, err := os.MkdirTemp("", "mtftpd-bench-mcast-")
		if err != nil {
			return err
		}
		s.Dir = d
		if !*keep {
			defer os.RemoveAll(d)
		}
	} else if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("mcast: --dir: %w", err)
	}

	return benchRun[bench.MCastReport]{
		quiet: *quiet, jsonOut: *jsonOut, run: s.Run,
		display: func(ctx context.Context, w io.Writer, tty bool) *swarmDisplay {
			return startMCastDisplay(ctx, w, s, tty)
		},
		print: func(w io.Writer, rep bench.MCastReport) {
			printMCastReport(w, rep)
			if *keep {
				fmt.Fprintf(w, "  files kept in %s\n", s.Dir)
			}
		},
		check: func(rep bench.MCastReport) error {
			if rep.Completed < rep.Receivers {
				return fmt.Errorf("mcast: %d of %d receivers hold the verified file", rep.Completed, rep.Receivers)
			}
			return nil
		},
	}.do()
}

// startMCastDisplay shows the bytes all receivers hold against what they
// need.
func startMCastDisplay(ctx context.Context, w io.Writer, s *bench.MCastSwarm, tty bool) *swarmDisplay {
	live := s.Live
	status := func() string {
		held, needed := live.Progress()
		pct := 0.0
		if needed > 0 {
			pct = 100 * float64(held) / float64(needed)
		}
		return fmt.Sprintf("verified %d/%d  failed %d  held %.1f %%", live.Completed.Load(), s.Receivers, live.Failed.Load(), pct)
	}
	progress := func() (int64, int64) {
		held, needed := live.Progress()
		return held, max(needed, 1)
	}
	return startLiveDisplay(ctx, w, tty, "bench mcast", fmt.Sprintf("%s x%d %s ", s.File, s.Receivers, s.Dialect), progress, status)
}

// printMCastReport writes the short human summary.
func printMCastReport(w io.Writer, r bench.MCastReport) {
	fmt.Fprintf(w, "mcast swarm: %d %s receivers x %s from %s\n", r.Receivers, r.Dialect, r.File, r.Target)
	verified := "completed"
	if r.Verify != "" {
		verified = "verified"
	}
	all := "not all"
	if r.AllVerifiedSeconds > 0 {
		all = fmt.Sprintf("%.3f s", r.AllVerifiedSeconds)
	}
	fmt.Fprintf(w, "  %d/%d %s, %d failed; all done in %s (run %.3f s, bench CPU %.2f s); file %d bytes\n",
		r.Completed, r.Receivers, verified, r.Failed, all, r.WallSeconds, r.ClientCPUSeconds, r.FileSize)
	l := r.ReceiverMs
	fmt.Fprintf(w, "  receiver ms: p50 %.1f  p95 %.1f  p99 %.1f  max %.1f\n", l.P50, l.P95, l.P99, l.Max)
	fmt.Fprintf(w, "  received %d bytes for %d needed (%.3fx), %d duplicates; repairs asked %d",
		r.BytesReceived, r.BytesNeeded, r.ReceivedRatio, r.Duplicates, r.RepairsAsked)
	switch r.Dialect {
	case "native":
		fmt.Fprintf(w, ", rebuilt %d shards, lost %d, moves %d", r.Rebuilt, r.Lost, r.Moves)
	case "rfc2090":
		fmt.Fprintf(w, ", made master %d times", r.Masters)
	case "pxe":
		fmt.Fprintf(w, ", passes acknowledged %d", r.Masters)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  errors: %s\n", counts(r.Errors))
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "    %s\n", e)
	}
	if r.Stopped != "" {
		fmt.Fprintf(w, "  stopped early: %s\n", r.Stopped)
	}
}
