package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mtftpd/mtftpd/bench"
)

func runBenchDHCP(args []string) error {
	fs := newFlags("bench dhcp")
	iface := fs.String("iface", "", "interface to storm on (required: DHCP is broadcast; use a lab network only)")
	clients := fs.Int("clients", 100, "simulated clients, each with its own MAC (02:6d:74:00:00:01, ...)")
	concurrency := fs.Int("concurrency", 1, "exchanges at once")
	pxe := fs.Bool("pxe", false, "send PXE options 60, 93, 94, 97 like firmware")
	arch := fs.Uint("arch", 0, "client architecture for option 93 (0 BIOS, 7 UEFI x64, 11 ARM64); implies --pxe")
	release := fs.Bool("release", false, "send DHCPRELEASE after each ACK (cycles a pool smaller than --clients)")
	timeout := fs.Duration("timeout", bench.DefaultDHCPTimeout, "limit of one exchange, DISCOVER to ACK")
	duration := fs.Duration("duration", bench.DefaultDHCPDuration, "limit of the whole storm")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file (- for stdout)")
	if _, help, err := parseArgs(fs, args, 0, ""); help || err != nil {
		return err
	}
	if *iface == "" {
		return errors.New("dhcp: --iface is required: a DHCP storm broadcasts, so name the interface of a lab network explicitly")
	}
	if *arch > 0xffff {
		return fmt.Errorf("--arch %d is outside 0..65535", *arch)
	}
	if fs.Changed("arch") {
		*pxe = true
	}

	s := &bench.DHCPStorm{
		Iface: *iface, Clients: *clients, Concurrency: *concurrency, Timeout: *timeout,
		Release: *release, PXE: *pxe, Arch: uint16(*arch), Duration: *duration,
	}
	return benchRun[bench.DHCPReport]{
		jsonOut: *jsonOut, run: s.Run, print: printDHCPReport,
		check: func(rep bench.DHCPReport) error {
			if rep.Completed < rep.Clients {
				return fmt.Errorf("dhcp: %d of %d exchanges completed", rep.Completed, rep.Clients)
			}
			return nil
		},
	}.do()
}

// printDHCPReport writes the short human summary.
func printDHCPReport(w io.Writer, r bench.DHCPReport) {
	mode := "DORA"
	if r.Release {
		mode += "+RELEASE"
	}
	if r.PXE {
		mode += fmt.Sprintf(", PXE arch %d", r.Arch)
	}
	fmt.Fprintf(w, "dhcp storm on %s: %d clients, concurrency %d, %s\n", r.Iface, r.Clients, r.Concurrency, mode)
	fmt.Fprintf(w, "  completed %d/%d in %.3f s: %.1f exchanges/s\n", r.Completed, r.Clients, r.WallSeconds, r.ExchangesPerSec)
	if r.Completed > 0 && r.ClientCPUSeconds > 0 {
		// The storm shares the machine with the server it measures: its
		// own cost says how much it squeezes the figure above.
		fmt.Fprintf(w, "  storm CPU %.2f s (%.0f µs per exchange)\n", r.ClientCPUSeconds, r.ClientCPUSeconds/float64(r.Completed)*1e6)
	}
	l := r.LatencyMs
	fmt.Fprintf(w, "  DISCOVER→ACK ms: p50 %.2f  p95 %.2f  p99 %.2f  max %.2f\n", l.P50, l.P95, l.P99, l.Max)
	fmt.Fprintf(w, "  failures: %s", counts(r.Failures))
	if r.NAKs > 0 {
		fmt.Fprintf(w, "; NAK reasons: %s", counts(r.NAKReasons))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  retransmits %d, duplicate offers %d, duplicate ACKs %d, stray replies %d, servers %s\n",
		r.Retransmits, r.DuplicateOffers, r.DuplicateAcks, r.StrayReplies, counts(r.Servers))
	for _, d := range r.Duplicates {
		held := "offered to"
		if d.Acked {
			held = "leased to"
		}
		fmt.Fprintf(w, "  duplicate %s: %s to %s while %s %s\n", d.Kind, d.IP, d.MAC, held, d.HeldBy)
	}
	if r.NotStarted > 0 {
		fmt.Fprintf(w, "  %d clients never started\n", r.NotStarted)
	}
	if r.Stopped != "" {
		fmt.Fprintf(w, "  stopped early: %s\n", r.Stopped)
	}
	if r.RecvError != "" {
		fmt.Fprintf(w, "  socket read error: %s\n", r.RecvError)
	}
}

// counts formats a map as "k n, k n" in key order, "none" when empty.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = `""`
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// writeJSON writes v indented to path (atomically: temp file and rename)
// or to stdout for "-".
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeOutput(path, append(b, '\n'))
}
