package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// benchRun is what the bench commands share once their flags are read:
// run under a context SIGINT and SIGTERM cancel, with a live display on
// stderr unless quiet, then print the report, write it as JSON if asked,
// and fail the command when the report says the run failed.
type benchRun[R any] struct {
	quiet   bool
	jsonOut string                                                         // "" for none, "-" for stdout
	display func(ctx context.Context, w io.Writer, tty bool) *swarmDisplay // nil for none
	run     func(ctx context.Context) (R, error)
	print   func(w io.Writer, rep R)
	check   func(rep R) error // the command's error for a run that failed
}

func (b benchRun[R]) do() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var display *swarmDisplay
	if !b.quiet && b.display != nil {
		display = b.display(ctx, os.Stderr, isTerminal(os.Stderr))
	}
	rep, err := b.run(ctx)
	if display != nil {
		display.stop()
	}
	if err != nil {
		return err
	}
	b.print(os.Stderr, rep)
	if b.jsonOut != "" {
		if err := writeJSON(b.jsonOut, rep); err != nil {
			return err
		}
	}
	return b.check(rep)
}
