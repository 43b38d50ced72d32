package main

import (
	"context"
	"os"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// byteBar is a progress bar of bytes on stderr (name, done / total,
// average speed, percentage), drawn only when stderr is a terminal. A nil
// *byteBar does nothing, so callers need no branches.
type byteBar struct {
	p   *mpb.Progress
	bar *mpb.Bar
}

func newByteBar(ctx context.Context, show bool, name string, total int64) *byteBar {
	if !show || !isTerminal(os.Stderr) {
		return nil
	}
	p := mpb.NewWithContext(ctx, mpb.WithOutput(os.Stderr), mpb.WithWidth(40))
	bar := p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name+" "), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f"), decor.Percentage(decor.WCSyncSpace)))
	return &byteBar{p, bar}
}

// set moves the bar to done bytes of total (total ≤ 0: unchanged).
func (b *byteBar) set(done, total int64) {
	if b == nil {
		return
	}
	if total > 0 {
		b.bar.SetTotal(total, false)
	}
	b.bar.SetCurrent(done)
}

// finish completes the bar (or aborts it on err) and waits for its last
// drawing.
func (b *byteBar) finish(err error) {
	if b == nil {
		return
	}
	if err != nil {
		b.bar.Abort(false)
	} else {
		b.bar.SetTotal(b.bar.Current(), true)
	}
	b.p.Wait()
}
