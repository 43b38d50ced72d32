package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/tftp"
)

//go:embed demo
var demoFS embed.FS

// demoListen is the --demo address: loopback and an unprivileged port, so
// `make run` works without root and reaches nobody else.
const demoListen = "127.0.0.1:6969"

// demoHTTP is the --demo mirror address, loopback too.
const demoHTTP = "127.0.0.1:8069"

// demoRoot stands for the embedded root in tftp.root until serve writes
// it to a temporary directory.
const demoRoot = "(embedded demo root)"

// demoBigSize is the generated file of the demo root: big enough to show
// windows, GSO and a progress bar, small enough to make in a blink.
const demoBigSize = 32 << 20

const serveAbout = `Every config key is also a flag, --section.key VALUE (listed below); flags
win over the file, the file over the defaults. A boolean key alone
(--mtftp.enabled) means true; --key=false turns it off. --print-config shows
the result as TOML. SIGHUP re-reads the file (flags still win).`

func runServe(args []string) error {
	fs := newFlags("serve")
	cfgPath := fs.String("config", "", "TOML config file (every key also has a flag)")
	demo := fs.Bool("demo", false, "serve an embedded demo root on "+demoListen)
	printCfg := fs.Bool("print-config", false, "print the effective config as TOML and exit")
	apply := config.Flags(fs)
	pos, help, err := parseFlags(fs, args)
	if help || err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("unexpected argument %q", pos[0])
	}
	load := func() (config.Config, error) { return loadServeConfig(*cfgPath, *demo, apply) }
	cfg, err := load()
	if err != nil {
		return err
	}
	if *printCfg {
		b, err := cfg.Encode()
		if err != nil {
			return err
		}
		os.Stdout.Write(b)
		return nil
	}
	log := newLogger(cfg.Log)

	// Every privileged port is opened first, then privileges are
	// dropped, then every directory the server writes is checked or
	// created by the user it now is, and only then is anything served
	// (privileges.go).
	sockCtx, sockCancel := context.WithCancel(context.Background())
	defer sockCancel()
	ports, err := openPorts(sockCtx, cfg)
	if err != nil {
		return err
	}
	defer ports.Close()
	if err := dropPrivileges(cfg, log); err != nil {
		return err
	}
	if err := checkWritable(cfg); err != nil {
		return err
	}
	svc, err := buildServices(cfg, *demo, ports, log)
	if err != nil {
		svc.Close() // what was built before the failure
		return err
	}
	defer svc.Close()
	if svc.demoDir != "" {
		printDemoHelp(cfg.TFTP.Listen, cfg.HTTP.Listen)
	}
	// The reloader compares with the config as loaded (before the demo
	// root was made).
	return svc.run(&reloader{load: load, cur: cfg, log: log, tftp: svc.tftp, dhcp: svc.dhcp, dhcp6: svc.dhcp6, pxeLimit: svc.pxeLimit, imaging: svc.imaging})
}

// run serves until a signal or a failure, then shuts every service down.
// SIGINT/SIGTERM: stop accepting, let running transfers finish for
// shutdown_grace, then stop them; a second signal stops at once. SIGHUP
// re-reads the config (reload.go). A service that stops by itself is a
// failure (a port in use, say): the others are stopped and it is
// reported.
func (s *services) run(live *reloader) error {
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	// SIGHUP is caught from here on, so a reload during start-up does
	// not kill the server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hard, hardStop := context.WithCancel(context.Background())
	defer hardStop()
	exits := make(chan exit, 4)
	running := 0
	for _, v := range s.running() {
		running++
		go func() { exits <- exit{v.what, v.serve(hard)} }()
	}
	var first error
	for done := false; !done; {
		select {
		case <-hup:
			live.reload()
		case e := <-exits:
			running--
			first = fmt.Errorf("%s: %w", e.what, e.err)
			if e.err == nil {
				first = fmt.Errorf("%s stopped unexpectedly", e.what)
			}
			done = true
		case <-sigCtx.Done():
			stopSignals()
			s.drain(live.cur.TFTP.ShutdownGrace.Duration, live.log)
			done = true
		}
	}
	hardStop()
	for ; running > 0; running-- {
		e := <-exits
		if e.err != nil && !errors.Is(e.err, tftp.ErrServerClosed) && !errors.Is(e.err, dhcp.ErrServerClosed) &&
			!errors.Is(e.err, mtftp.ErrServerClosed) && first == nil {
			first = fmt.Errorf("%s: %w", e.what, e.err)
		}
	}
	return first
}

// drain lets every service finish what it is doing, all at once, each
// until grace ends or a second signal comes; then the rest is cut off.
func (s *services) drain(grace time.Duration, log zerolog.Logger) {
	log.Info().Dur("grace", grace).Int("active", s.tftp.Active()).Msg("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	second, stop2 := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop2()
	var wg sync.WaitGroup
	for _, v := range s.running() {
		wg.Go(func() {
			if err := v.shutdown(second); err != nil {
				log.Warn().Err(err).Str("service", v.what).Msg("stopped before it finished")
			}
		})
	}
	wg.Wait()
}

// writeQuota maps tftp.write_quota to tftp.Server.WriteQuota: 0 in the
// config means no quota, which the server spells negative.
func writeQuota(bytes int64) int64 {
	if bytes == 0 {
		return -1
	}
	return bytes
}

// loadServeConfig builds the effective config: defaults (the demo's
// addresses with --demo), the file, then flags, validated.
func loadServeConfig(path string, demo bool, apply func(*config.Config) error) (config.Config, error) {
	cfg := config.Defaults()
	if demo {
		cfg.TFTP.Listen = netip.MustParseAddrPort(demoListen) // constants: cannot fail
		cfg.TFTP.Root = demoRoot
		cfg.HTTP.Listen = netip.MustParseAddrPort(demoHTTP)
	}
	if path != "" {
		if err := config.Load(path, &cfg); err != nil {
			return cfg, err
		}
	}
	if err := apply(&cfg); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid config:\n%w", err)
	}
	return cfg, nil
}

// exit is how a service's Serve returned.
type exit struct {
	what string
	err  error
}

func newLogger(c config.Log) zerolog.Logger {
	var w io.Writer = os.Stderr
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}
	}
	setLogLevel(c.Level)
	// The level is the process-wide one, so that SIGHUP can change it in
	// every service's copy of the logger at once.
	return zerolog.New(w).With().Timestamp().Logger()
}

// writeDemoRoot extracts the embedded demo files into a temp directory and
// adds big.img, a generated file of demoBigSize pseudo-random bytes.
func writeDemoRoot() (string, error) {
	dir, err := os.MkdirTemp("", "mtftpd-demo-")
	if err != nil {
		return "", err
	}
	sub, _ := fs.Sub(demoFS, "demo")
	if err := os.CopyFS(dir, sub); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	f, err := os.Create(filepath.Join(dir, "big.img"))
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	defer f.Close()
	// Deterministic content, so two runs serve the same bytes.
	r := rand.NewChaCha8([32]byte{'m', 't', 'f', 't', 'p', 'd'})
	if _, err := io.CopyN(f, r, demoBigSize); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, f.Close()
}

func printDemoHelp(listen, httpListen netip.AddrPort) {
	fmt.Fprintf(os.Stderr, `
mtftpd demo: serving an embedded root over TFTP on %[1]s and HTTP on %[2]s (loopback only).
Try, in another terminal:

  ./mtftpd get %[1]s hello.txt
  ./mtftpd get --blksize 1468 --windowsize 64 --tsize -o /tmp/big.img %[1]s big.img
  curl -s -o /tmp/big-curl.img tftp://%[1]s/big.img
  curl -s tftp://%[1]s/pxelinux.cfg/default
  curl -s 'tftp://%[1]s/boot/bcd'
  curl -s -r 0-99 http://%[2]s/hello.txt
  ./mtftpd status --watch          # or open http://%[2]s/ for the status page

Stop with Ctrl-C.

`, dialable(listen), dialable(httpListen))
}

// dialable is a listen address as a client on this host reaches it: a
// wildcard (0.0.0.0, [::]) becomes loopback of its family.
func dialable(a netip.AddrPort) netip.AddrPort {
	switch {
	case a.Addr() == netip.IPv4Unspecified():
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), a.Port())
	case a.Addr() == netip.IPv6Unspecified():
		return netip.AddrPortFrom(netip.IPv6Loopback(), a.Port())
	}
	return a
}

// startPolicy maps the config's [mtftp] start keys onto mtftp's policy:
// there 0s means "none" (start at once), in mtftp a zero field means the
// default and a negative one none. A [[mtftp.start]] rule keeps its zeros:
// a key left out takes the [mtftp] value.
func startPolicy(minReceivers int, maxWait, settle config.Duration) mtftp.StartPolicy {
	p := mtftp.StartPolicy{MinReceivers: minReceivers, MaxWait: maxWait.Duration, Settle: settle.Duration}
	if p.MaxWait == 0 {
		p.MaxWait = -1
	}
	if p.Settle == 0 {
		p.Settle = -1
	}
	return p
}
