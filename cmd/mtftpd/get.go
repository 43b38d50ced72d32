package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/tftp"
)

func runGet(args []string) error {
	fs := newFlags("get")
	blksize := fs.Int("blksize", 0, "ask for this block size (8..65464); 0 = 512, no option")
	window := fs.Int("windowsize", 0, "ask for this window (RFC 7440); 0 = lock-step, no option")
	tsize := fs.Bool("tsize", false, "ask for the file size (progress shows a total)")
	netascii := fs.Bool("netascii", false, "transfer in netascii mode (text, CR LF on the wire)")
	out := fs.StringP("output", "o", "", "output file (default: the remote file's base name; - for stdout)")
	timeout := fs.Duration("timeout", time.Second, "first retransmission timeout (adapts afterwards)")
	retries := fs.Int("retries", tftp.DefaultRetries, "consecutive timeouts before giving up")
	quiet := fs.BoolP("quiet", "q", false, "no progress bar and no summary")
	multicast := fs.Bool("multicast", false, "join the file's native multicast stream (falls back to unicast if the server does not offer it)")
	iface := fs.String("iface", "", "with --multicast: interface to join the group on (default: the one the server is reached by)")
	verbose := fs.BoolP("verbose", "v", false, "with --multicast: log every status report (loss, rate, NAKs) to stderr")
	minRecv := fs.Int("min-receivers", 0, "with --multicast: ask a new session to start once this many receivers joined")
	maxWait := fs.Duration("max-wait", 0, "with --multicast: ask a new session to start at the latest this long after it began (the server caps it)")
	settle := fs.Duration("settle", 0, "with --multicast: ask a new session to start once nobody new joined for this long")
	pos, help, err := parseArgs(fs, args, 2, "need HOST[:PORT] and REMOTE")
	if help || err != nil {
		return err
	}
	server, remote := pos[0], pos[1]
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

	o, err := openGetOutput(dest)
	if err != nil {
		return err
	}
	defer o.close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *multicast {
		if o.tmp == nil {
			return errors.New("--multicast writes shards at their offsets: it needs a regular file, not stdout or a device")
		}
		if *netascii {
			return errors.New("--multicast transfers octets only")
		}
		r := &mtftp.NativeReceiver{BlockSize: *blksize, Interface: *iface, Timeout: 10 * *timeout,
			Start: mtftp.StartPolicy{MinReceivers: *minRecv, MaxWait: *maxWait, Settle: *settle}}
		if *verbose {
			r.Log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.DebugLevel).With().Timestamp().Logger()
		}
		if done, err := getMulticastFirst(ctx, r, remote, server, o.tmp, *quiet); done || err != nil {
			return err
		}
	}
	c := &tftp.Client{BlockSize: *blksize, WindowSize: *window, TSize: *tsize, Timeout: *timeout, Retries: *retries}
	if *netascii {
		c.Mode = "netascii"
	}
	res, err := getUnicast(ctx, c, server, remote, o.w, !*quiet && dest != "-" && isTerminal(os.Stderr))
	if err != nil {
		return err
	}
	if o.tmp != nil {
		if err := o.tmp.Commit(); err != nil {
			return err
		}
	}
	if !*quiet {
		mbps := float64(res.Bytes) / res.Duration.Seconds() / 1e6
		fmt.Fprintf(os.Stderr, "%s: %d bytes in %s (%.1f MB/s), blksize %d, windowsize %d, %d timeouts, from %s\n",
			remote, res.Bytes, res.Duration.Round(time.Millisecond), mbps, res.BlockSize, res.WindowSize, res.Timeouts, res.ServerAddr)
	}
	return nil
}

// getMulticast downloads through the native multicast dialect.
// getOutput is where get writes: stdout ("-"), a device or FIFO in place,
// or a temp file beside the destination, renamed on success.
type getOutput struct {
	w       io.Writer
	tmp     *atomicfile.File // nil for stdout or a device
	special *os.File
}

// openGetOutput opens dest for get. A failed download never leaves a half
// file under the real name: it goes to a temp file renamed on success. A
// device or FIFO (-o /dev/null) is written in place: no file to tear there
// (openSpecial).
func openGetOutput(dest string) (*getOutput, error) {
	o := &getOutput{w: os.Stdout}
	special, err := openSpecial(dest)
	switch {
	case err != nil:
		return nil, err
	case special != nil:
		o.special, o.w = special, special
	case dest != "-":
		if o.tmp, err = atomicfile.Create(dest, 0o644); err != nil {
			return nil, err
		}
		o.w = o.tmp
	}
	return o, nil
}

// close closes a device and removes a temp file not committed.
func (o *getOutput) close() {
	if o.special != nil {
		o.special.Close()
	}
	if o.tmp != nil {
		o.tmp.Abort()
	}
}

// getMulticastFirst downloads remote by native multicast into tmp and
// commits it (done). If the server does not offer native multicast it
// empties tmp for a unicast download instead (not done).
func getMulticastFirst(ctx context.Context, r *mtftp.NativeReceiver, remote, server string, tmp *atomicfile.File, quiet bool) (done bool, err error) {
	err = getMulticast(ctx, r, remote, server, tmp.File, quiet)
	if !errors.Is(err, mtftp.ErrNativeUnsupported) {
		if err != nil {
			return true, err
		}
		return true, tmp.Commit()
	}
	fmt.Fprintln(os.Stderr, "server offers no native multicast: downloading by unicast")
	return false, tmp.Truncate(0)
}

// getUnicast downloads remote into w with c, showing a progress bar on
// stderr if bar.
func getUnicast(ctx context.Context, c *tftp.Client, server, remote string, w io.Writer, bar bool) (tftp.GetResult, error) {
	if !bar {
		return c.Get(ctx, server, remote, w)
	}
	p := mpb.NewWithContext(ctx, mpb.WithOutput(os.Stderr), mpb.WithWidth(40))
	b := p.AddBar(0,
		mpb.PrependDecorators(decor.Name(remote+" "), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f"), decor.Percentage(decor.WCSyncSpace)))
	c.Progress = func(got, total int64) {
		if total > 0 && b.Current() == 0 {
			b.SetTotal(total, false)
		}
		b.SetCurrent(got)
	}
	res, err := c.Get(ctx, server, remote, w)
	if err == nil {
		b.SetTotal(res.Bytes, true)
	} else {
		b.Abort(false)
	}
	p.Wait()
	return res, err
}

func getMulticast(ctx context.Context, r *mtftp.NativeReceiver, remote, server string, out *os.File, quiet bool) error {
	var p *mpb.Progress
	done := make(chan struct{})
	if !quiet && isTerminal(os.Stderr) {
		p = mpb.NewWithContext(ctx, mpb.WithOutput(os.Stderr), mpb.WithWidth(40))
		bar := p.AddBar(0,
			mpb.PrependDecorators(decor.Name(remote+" (multicast) "), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f"), decor.Percentage(decor.WCSyncSpace)))
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				if n := r.Size.Load(); n > 0 && bar.Current() == 0 {
					bar.SetTotal(n, false)
				}
				bar.SetCurrent(r.Held.Load())
				select {
				case <-done:
					bar.SetTotal(max(0, r.Size.Load()), true)
					return
				case <-t.C:
				}
			}
		}()
	}
	res, err := r.Get(ctx, server, remote, out)
	close(done)
	if p != nil {
		p.Wait()
	}
	if err != nil {
		return err
	}
	if !quiet {
		mbps := float64(res.Size) / res.Duration.Seconds() / 1e6
		fmt.Fprintf(os.Stderr, "%s: %d bytes in %s (%.1f MB/s) by multicast, sha256 %s verified, %d shards, %d rebuilt from parity, %d lost, %d NAKs, %d moves, %d rejoins\n",
			remote, res.Size, res.Duration.Round(time.Millisecond), mbps, res.SHA256, res.Shards, res.Rebuilt, res.Lost, res.Naks, res.Moves, res.Rejoins)
	}
	return nil
}
