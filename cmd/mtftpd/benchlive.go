package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/mtftpd/mtftpd/bench"
)

// startLiveDisplay shows a run's progress until stopped: one mpb bar
// (title, progress's current of total, then status) on a terminal, a
// plain "prefix elapsed: status" line every 2 s otherwise (logs, CI).
func startLiveDisplay(ctx context.Context, w io.Writer, tty bool, prefix, title string,
	progress func() (current, total int64), status func() string) *swarmDisplay {
	ctx, cancel := context.WithCancel(ctx)
	d := &swarmDisplay{cancel: cancel, done: make(chan struct{})}
	start := time.Now()
	if !tty {
		go d.tick(ctx, 2*time.Second, func() {
			fmt.Fprintf(w, "%s %s: %s\n", prefix, time.Since(start).Round(time.Second), status())
		}, func() {})
		return d
	}
	p := mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(200*time.Millisecond))
	_, total := progress()
	bar := p.AddBar(total, mpb.PrependDecorators(decor.Name(title)),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return status() })))
	go d.tick(ctx, 100*time.Millisecond, func() {
		cur, total := progress()
		bar.SetTotal(total, false)
		bar.SetCurrent(cur)
	}, func() {
		bar.Abort(false)
		p.Wait()
	})
	return d
}

// tick calls f once per period every until ctx ends, then end, then closes
// d.done.
func (d *swarmDisplay) tick(ctx context.Context, every time.Duration, f, end func()) {
	defer close(d.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			end()
			return
		case <-t.C:
			f()
		}
	}
}

// parseSwarmChecks reads the flags the swarm benches share: the local
// addresses to send from (--source-addrs) and the check of every file
// (parseVerify).
func parseSwarmChecks(sources, verify, verifyFile string) (addrs []netip.Addr, sum []byte, size int64, err error) {
	if sources != "" {
		if addrs, err = bench.ParseSourceAddrs(sources); err != nil {
			return nil, nil, 0, fmt.Errorf("--%w", err)
		}
	}
	sum, size, err = parseVerify(verify, verifyFile)
	return addrs, sum, size, err
}

// parseVerify reads --verify sha256:HEX or --verify-file PATH (the
// digest and size of a local copy); neither gives a nil digest and size 0.
func parseVerify(verify, verifyFile string) (sum []byte, size int64, err error) {
	switch {
	case verify != "" && verifyFile != "":
		return nil, 0, errors.New("give --verify or --verify-file, not both")
	case verify != "":
		sum, err := bench.ParseSHA256(verify)
		if err != nil {
			return nil, 0, fmt.Errorf("--%w", err)
		}
		return sum, 0, nil
	case verifyFile != "":
		sum, size, err := sha256File(verifyFile)
		if err != nil {
			return nil, 0, fmt.Errorf("--verify-file: %w", err)
		}
		return sum, size, nil
	}
	return nil, 0, nil
}
