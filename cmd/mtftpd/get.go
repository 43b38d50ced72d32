package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/mtftpd/mtftpd/tftp"
)

func runGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	blksize := fs.Int("blksize", 0, "ask for this block size (8..65464); 0 = 512, no option")
	window := fs.Int("windowsize", 0, "ask for this window (RFC 7440); 0 = lock-step, no option")
	tsize := fs.Bool("tsize", false, "ask for the file size (progress shows a total)")
	netascii := fs.Bool("netascii", false, "transfer in netascii mode (text, CR LF on the wire)")
	out := fs.String("o", "", "output file (default: the remote file's base name; - for stdout)")
	timeout := fs.Duration("timeout", time.Second, "first retransmission timeout (adapts afterwards)")
	retries := fs.Int("retries", tftp.DefaultRetries, "consecutive timeouts before giving up")
	quiet := fs.Bool("q", false, "no progress bar and no summary")
	if help, err := parseArgs(fs, "Usage: mtftpd get [flags] HOST[:PORT] REMOTE", args); help || err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("need HOST[:PORT] and REMOTE")
	}
	server, remote := fs.Arg(0), fs.Arg(1)
	if *blksize != 0 && (*blksize < tftp.MinBlockSize || *blksize > tftp.MaxBlockSize) {
		return fmt.Errorf("--blksize %d is outside 8..65464", *blksize)
	}
	if *window < 0 || *window > tftp.MaxWindowSize {
		return fmt.Errorf("--windowsize %d is outside 1..65535", *window)
	}
	dest := *out
	if dest == "" {
		dest = path.Base(filepath.ToSlash(remote))
		if dest == "/" || dest == "." {
			return errors.New("cannot name the output file: use -o")
		}
	}

	// Write to a temp file beside the destination and rename on success:
	// a failed download never leaves a half file under the real name.
	var w io.Writer = os.Stdout
	var tmp *os.File
	if dest != "-" {
		var err error
		tmp, err = os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".part-*")
		if err != nil {
			return err
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		w = tmp
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := &tftp.Client{BlockSize: *blksize, WindowSize: *window, TSize: *tsize, Timeout: *timeout, Retries: *retries}
	if *netascii {
		c.Mode = "netascii"
	}
	var p *mpb.Progress
	var bar *mpb.Bar
	if !*quiet && dest != "-" && isTerminal(os.Stderr) {
		p = mpb.NewWithContext(ctx, mpb.WithOutput(os.Stderr), mpb.WithWidth(40))
		bar = p.AddBar(0,
			mpb.PrependDecorators(decor.Name(remote+" "), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f"), decor.Percentage(decor.WCSyncSpace)))
		c.Progress = func(got, total int64) {
			if total > 0 && bar.Current() == 0 {
				bar.SetTotal(total, false)
			}
			bar.SetCurrent(got)
		}
	}
	res, err := c.Get(ctx, server, remote, w)
	if bar != nil {
		if err == nil {
			bar.SetTotal(res.Bytes, true)
		} else {
			bar.Abort(false)
		}
		p.Wait()
	}
	if err != nil {
		return err
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), dest); err != nil {
			return err
		}
		tmp = nil
	}
	if !*quiet {
		mbps := float64(res.Bytes) / res.Duration.Seconds() / 1e6
		fmt.Fprintf(os.Stderr, "%s: %d bytes in %s (%.1f MB/s), blksize %d, windowsize %d, %d timeouts, from %s\n",
			remote, res.Bytes, res.Duration.Round(time.Millisecond), mbps, res.BlockSize, res.WindowSize, res.Timeouts, res.ServerAddr)
	}
	return nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
