package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
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
		go func() {
			defer close(d.done)
			t := time.NewTicker(2 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fmt.Fprintf(w, "%s %s: %s\n", prefix, time.Since(start).Round(time.Second), status())
				}
			}
		}()
		return d
	}
	p := mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(200*time.Millisecond))
	_, total := progress()
	bar := p.AddBar(total, mpb.PrependDecorators(decor.Name(title)),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return status() })))
	go func() {
		defer close(d.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				bar.Abort(false)
				p.Wait()
				return
			case <-t.C:
				cur, total := progress()
				bar.SetTotal(total, false)
				bar.SetCurrent(cur)
			}
		}
	}()
	return d
}
