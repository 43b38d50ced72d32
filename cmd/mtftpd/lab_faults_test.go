//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// labProfile is a firmware profile as `mtftpd get` flags.
type labProfile struct {
	name  string
	flags []string
}

var labProfiles = []labProfile{
	{"bios", []string{"--blksize", "1432"}},                         // lock-step (iPXE, PXE ROMs)
	{"uefi", []string{"--blksize", "1468", "--windowsize", "4"}},    // EDK2
	{"linux", []string{"--blksize", "65464", "--windowsize", "64"}}, // clamped to MTU - 32 by the server
}

// transferLine is the server's one log line per transfer.
type transferLine struct {
	Message     string `json:"message"`
	File        string `json:"file"`
	Outcome     string `json:"outcome"`
	Blocks      uint64 `json:"blocks"`
	Retransmits uint64 `json:"retransmits"`
	Blksize     int    `json:"blksize"`
	Windowsize  int    `json:"windowsize"`
}

func transfers(log string) map[string]transferLine {
	out := map[string]transferLine{}
	for line := range strings.Lines(log) {
		var l transferLine
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "transfer" {
			out[l.File] = l
		}
	}
	return out
}

// TestLabUnicastFaults: in the lab, with 1 %, 5 % and 20 % random loss
// both ways on every client port, and then with delay and reordering,
// each firmware profile downloads a file whose bytes are checked; the
// server's retransmit counts stay plausible for the loss (some at 5 % and
// up, a bounded multiple of the blocks), and reordering alone costs next
// to no retransmissions (no go-back-N storm).
func TestLabUnicastFaults(t *testing.T) {
	testutil.Heavy(t)                                             // docs/design.md, "Lab rules": heavy tests take turns
	testutil.Tool(t, "iptables")                                  // the delay impairment
	l := netlab.New(t, netlab.Options{Clients: len(labProfiles)}) // skips unless root
	root := t.TempDir()
	want := map[string][]byte{}
	rng := rand.New(rand.NewPCG(8, 8))
	for _, p := range labProfiles {
		for _, size := range []int{1 << 20, 256 << 10} {
			b := make([]byte, size)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			name := fmt.Sprintf("%s-%d.bin", p.name, size)
			os.WriteFile(filepath.Join(root, name), b, 0o644)
			want[name] = b
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv := l.Command(ctx, "srv", bin, "serve", "--tftp.listen", netlab.ServerAddr+":69", "--tftp.root", root,
		"--http.listen", "", "--mtftp.enabled=false", "--log.format", "json",
		// A lost final ACK is logged ("unconfirmed") after the retries,
		// not after the default 30 s of stall tolerance. 5 s, not less:
		// at 20 % loss both ways a lock-step block's round trip fails
		// 36 % of the time, and a 1 s stall gave the server only a few
		// retransmissions before it gave up (CI: bios at 30 of 184
		// blocks); 5 s gives it about ten.
		"--tftp.stall_timeout", "5s", "--tftp.max_rto", "1s")
	// Without GSO: on the lab's veths a GSO super-datagram stays one skb
	// through the bridge, so nftables would drop or pass a whole window
	// at once instead of single datagrams as a real wire does.
	srv.Env = append(os.Environ(), "MTFTPD_DISABLE_GSO=1")
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); srv.Wait() }()
	out := t.TempDir()
	get := func(client int, p labProfile, name string) error {
		// 20 retries: the client's timer starts near the lab's round trip
		// (20 ms floor) and doubles to the 500 ms cap, so 10 consecutive
		// timeouts are only ~3 s. At 20 % loss each way on a loaded CI
		// machine (load average 8, -race) a client ran out of them once
		// (uefi, window 4) and the server then logged "timeout"; this
		// test measures what retransmissions cost, not a client's patience.
		args := append([]string{"get", "-q", "--retries", "20", "--timeout", "500ms"}, p.flags...)
		args = append(args, "-o", filepath.Join(out, name), netlab.ServerAddr, name)
		o, err := l.Run(ctx, netlab.Client(client), bin, args...)
		if err != nil {
			return fmt.Errorf("%v %s", err, o)
		}
		if got, _ := os.ReadFile(filepath.Join(out, name)); !bytes.Equal(got, want[name]) {
			return fmt.Errorf("%s: %d bytes differ from the served file", name, len(got))
		}
		return nil
	}
	var err error
	for i := 0; i < 50; i++ { // the server is up (bounded wait)
		if err = get(1, labProfiles[0], "bios-262144.bin"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("server not reachable: %v\n%s", err, logs.String())
	}

	// round runs every profile at once, one per client namespace, and
	// returns the server's log line of each transfer.
	round := func(t *testing.T, size int) map[string]transferLine {
		start := len(logs.String())
		var wg sync.WaitGroup
		errs := make([]error, len(labProfiles))
		for i, p := range labProfiles {
			wg.Go(func() { errs[i] = get(i+1, p, fmt.Sprintf("%s-%d.bin", p.name, size)) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: %v", labProfiles[i].name, err)
			}
		}
		// The transfer line is logged after the last ACK, or after the
		// server gave up waiting for it (lost: "unconfirmed"), which takes
		// its retries.
		got := map[string]transferLine{}
		for range 500 {
			got = transfers(logs.String()[start:])
			n := 0
			for _, p := range labProfiles {
				if _, ok := got[fmt.Sprintf("%s-%d.bin", p.name, size)]; ok {
					n++
				}
			}
			if n == len(labProfiles) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		return got
	}
	clear := func(t *testing.T) {
		if err := l.Impair("all", "clear"); err != nil {
			t.Fatal(err)
		}
	}
	for _, loss := range []struct {
		pct  string
		size int
	}{{"1", 1 << 20}, {"5", 1 << 20}, {"20", 256 << 10}} {
		t.Run("loss"+loss.pct, func(t *testing.T) {
			if err := l.Impair("all", "loss", loss.pct); err != nil {
				t.Fatal(err)
			}
			defer clear(t)
			got := round(t, loss.size)
			for _, p := range labProfiles {
				tl, ok := got[fmt.Sprintf("%s-%d.bin", p.name, loss.size)]
				if !ok {
					t.Errorf("%s: no transfer line", p.name)
					continue
				}
				ratio := float64(tl.Retransmits) / float64(tl.Blocks)
				t.Logf("loss %s%% %s: %d blocks of %d, window %d, %d retransmits (%.2f per block), %s %+v",
					loss.pct, p.name, tl.Blocks, tl.Blksize, tl.Windowsize, tl.Retransmits, ratio, tl.Outcome, tl)
				// Go-back-N resends at most the rest of a window per loss:
				// each lost packet (DATA or ACK) costs at most a window.
				if limit := 3 * float64(tl.Windowsize); ratio > limit {
					t.Errorf("%s: %.2f retransmits per block at %s%% loss, more than %.0f", p.name, ratio, loss.pct, limit)
				}
				if loss.pct != "1" && tl.Retransmits == 0 {
					t.Errorf("%s: no retransmits counted at %s%% loss over %d blocks", p.name, loss.pct, tl.Blocks)
				}
			}
		})
	}
	t.Run("reorder", func(t *testing.T) {
		for i := range labProfiles {
			if err := l.Impair(netlab.Client(i+1), "delay", "1", "5"); err != nil {
				t.Fatal(err)
			}
		}
		defer clear(t)
		got := round(t, 1<<20)
		for _, p := range labProfiles {
			tl := got[fmt.Sprintf("%s-%d.bin", p.name, 1<<20)]
			ratio := float64(tl.Retransmits) / float64(max(tl.Blocks, 1))
			t.Logf("delay 1 ms + jitter 5 ms %s: %d blocks, window %d, %d retransmits (%.2f per block)",
				p.name, tl.Blocks, tl.Windowsize, tl.Retransmits, ratio)
			// Nothing is lost: the client holds blocks that arrive ahead
			// of a gap and reports a gap only if it outlives the
			// reordering hold, so the server resends next to nothing
			// (before that hold: 40 retransmits per block at window 64).
			if ratio > 0.1 {
				t.Errorf("%s: %.2f retransmits per block with reordering alone", p.name, ratio)
			}
		}
	})
}
