//go:build linux

// Command nfqdelay delays packets that netfilter queues to it: the delay and
// reordering impairment of the network-namespace test lab (the lab's kernel
// has no sch_netem). For every packet on NFQUEUE -queue it sends an
// NF_ACCEPT verdict after -delay plus a uniform random [0, -jitter), so a
// jitter larger than the gap between packets reorders them.
//
//	nfqdelay -queue N -delay D [-jitter J] [-seed S] [-duration MAX] [-pidfile F]
//
// It binds the queue for metadata only (packets stay in the kernel), with a
// 65536-packet queue and fail-open, so it adds no loss of its own. It exits
// by itself after -duration (default 10m) and on SIGTERM or SIGINT; then it
// accepts every packet it still holds at once, unbinds the queue and prints
// its counters to stderr. Rules should use --queue-bypass so that traffic
// passes while no nfqdelay runs. Needs CAP_NET_ADMIN in its network
// namespace. scripts/netlab.sh impair PORT delay runs it.
package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const queueMaxlen = 65536

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("nfqdelay", flag.ContinueOnError)
	queue := fs.Uint("queue", 0, "NFQUEUE number to bind (0..65535)")
	delay := fs.Duration("delay", 0, "fixed delay of every packet")
	jitter := fs.Duration("jitter", 0, "plus a uniform random delay in [0, jitter); > 0 reorders")
	seed := fs.Uint64("seed", 0, "random seed of the jitter (0: random)")
	duration := fs.Duration("duration", 10*time.Minute, "exit after this long (> 0)")
	pidfile := fs.String("pidfile", "", "write the process id here once the queue is bound; removed on exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case fs.NArg() != 0:
		return usageErr(fs, "unexpected argument %q", fs.Arg(0))
	case *queue > 65535:
		return usageErr(fs, "-queue %d: want 0..65535", *queue)
	case *delay < 0 || *jitter < 0:
		return usageErr(fs, "-delay and -jitter must not be negative")
	case *duration <= 0:
		return usageErr(fs, "-duration must be > 0")
	}
	if *seed == 0 {
		var b [8]byte
		crand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	c, err := openQueue(uint16(*queue), queueMaxlen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nfqdelay:", err)
		return 1
	}
	d := newDelayer(c.accept)
	fmt.Fprintf(os.Stderr, "nfqdelay: queue %d bound: delay %v jitter %v seed %d, exit after %v\n",
		*queue, *delay, *jitter, *seed, *duration)
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "nfqdelay:", err)
			c.unbind(nil)
			c.close()
			return 1
		}
		defer os.Remove(*pidfile)
	}

	var stopRead atomic.Bool
	var enobufs, nlErrs atomic.Uint64
	readErr := make(chan error, 1)
	go func() {
		readErr <- readLoop(c, &stopRead, &enobufs, &nlErrs, func(id uint32) {
			wait := *delay
			if *jitter > 0 {
				wait += time.Duration(rng.Int64N(int64(*jitter)))
			}
			d.hold(id, wait)
		})
	}()

	rc := 0
	limit := time.NewTimer(*duration)
	defer limit.Stop()
	var why string
	select {
	case <-ctx.Done():
		why = "signal"
	case <-limit.C:
		why = "duration " + duration.String() + " reached"
	case err := <-readErr:
		why = "read error"
		fmt.Fprintln(os.Stderr, "nfqdelay:", err)
		readErr <- nil
		rc = 1
	}
	stopRead.Store(true)
	<-readErr // the reader returns within rcvTimeout

	d.flush()
	if err := c.unbind(func(id uint32) { d.hold(id, 0) }); err != nil {
		fmt.Fprintln(os.Stderr, "nfqdelay: unbind:", err)
		rc = 1
	}
	c.close()
	n := d.counters()
	fmt.Fprintf(os.Stderr, "nfqdelay: exit (%s): queued %d released %d max-held %d enobufs %d send-errors %d kernel-errors %d\n",
		why, n.queued, n.released, n.maxHeld, enobufs.Load(), n.sendErrs, nlErrs.Load())
	if n.firstErr != nil {
		fmt.Fprintln(os.Stderr, "nfqdelay: first send error:", n.firstErr)
	}
	return rc
}

func usageErr(fs *flag.FlagSet, format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "nfqdelay: "+format+"\n", a...)
	fs.Usage()
	return 2
}

// readLoop reads queued-packet messages until stop is set, calling onPacket
// with each packet id. ENOBUFS (the kernel could not deliver a message; with
// fail-open it accepted that packet itself) is counted, not fatal.
func readLoop(c *queueConn, stop *atomic.Bool, enobufs, nlErrs *atomic.Uint64, onPacket func(id uint32)) error {
	buf := make([]byte, 1<<16)
	reported := 0
	for !stop.Load() {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			switch {
			case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.ENOBUFS):
				enobufs.Add(1)
				continue
			}
			return fmt.Errorf("recv: %w", err)
		}
		msgs, err := splitMessages(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.typ {
			case packetMsgTyp:
				id, err := packetID(m.data)
				if err != nil {
					return err
				}
				onPacket(id)
			case unix.NLMSG_ERROR:
				// A verdict the kernel refused (verdicts ask for no ack).
				if errno, _, err := nlErrno(m.data); err == nil && errno != 0 {
					nlErrs.Add(1)
					if reported < 5 {
						reported++
						fmt.Fprintln(os.Stderr, "nfqdelay: kernel error on verdict:", errno)
					}
				}
			}
		}
	}
	return nil
}
