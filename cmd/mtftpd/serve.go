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
	"strings"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/imaging"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/mirror"
	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/status"
	"github.com/mtftpd/mtftpd/tftp"
)

//go:embed demo
var demoFS embed.FS

// demoListen is the --demo address: loopback and an unprivileged port, so
// `make run` works without root and reaches nobody else.
const demoListen = "127.0.0.1:6969"

// demoHTTP is the --demo mirror address, loopback too.
const demoHTTP = "127.0.0.1:8069"

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
	loaded := cfg // as the file and flags say, before the demo root is made
	var demoDir string
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

	if *demo && cfg.TFTP.Root == "(embedded demo root)" {
		dir, err := writeDemoRoot()
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		demoDir = dir
		cfg.TFTP.Root = dir
	}
	ups := &origins{cfg: cfg.Origin, log: log}
	defer ups.Close()
	tftpDir, tftpSource, err := ups.local(cfg.TFTP.Root)
	if err != nil {
		return fmt.Errorf("tftp.root: %w", err)
	}
	store, err := filestore.Open(tftpDir)
	if err != nil {
		return fmt.Errorf("tftp.root: %w", err)
	}
	defer store.Close()
	if tftpSource != nil {
		store.SetSource(tftpSource)
	}

	t := cfg.TFTP
	srv := &tftp.Server{
		Files: store, WriteDir: t.WriteDir, AllowOverwrite: t.AllowOverwrite, MaxUploadSize: t.MaxUploadSize,
		WriteQuota:   writeQuota(t.WriteQuota),
		MaxBlockSize: t.MaxBlockSize, AllowFragments: t.AllowFragments, MaxWindow: t.MaxWindow, MaxWindowBytes: t.MaxWindowBytes,
		InitialRTO: t.InitialRTO.Duration, MinRTO: t.MinRTO.Duration, MaxRTO: t.MaxRTO.Duration, Retries: t.Retries,
		StallTimeout: t.StallTimeout.Duration,
		MaxSessions:  t.MaxSessions, MaxPerClient: t.MaxPerClient, SessionLifetime: t.Lifetime.Duration,
		MaxUnconfirmed: t.MaxUnconfirmed, MaxUnconfirmedPerPrefix: t.MaxUnconfirmedPerPrefix, ConfirmTimeout: t.ConfirmTimeout.Duration,
		MaxRequestRate: t.MaxRequestRate, RequestBurst: t.RequestBurst,
		Log: log,
	}
	var mc *mtftp.Server
	// The PXE MTFTP port's requests are limited per address like the
	// TFTP port's, by the same keys, in a table of their own.
	pxeLimit := tftp.NewSourceLimiter(t.MaxRequestRate, t.RequestBurst)
	if m := cfg.MTFTP; m.Enabled || m.PXEListen != "" {
		mc = &mtftp.Server{
			Files: store, GroupRange: netip.MustParsePrefix(m.GroupRange), Port: m.Port, Interface: m.Interface, TTL: m.TTL,
			PXEListen: m.PXEListen, PXEGroup: netip.MustParseAddr(m.PXEGroup), PXEClientPort: m.PXEClientPort,
			PXEFileGroups: netip.MustParsePrefix(m.PXEFileGroups), PXEFilePort: m.PXEFilePort,
			InitialRTO: t.InitialRTO.Duration, MinRTO: t.MinRTO.Duration, MaxRTO: t.MaxRTO.Duration,
			SessionLifetime: t.Lifetime.Duration, Log: log,
			NativeRate: int64(m.NativeRateMbps) * 1e6 / 8, NativeStart: startPolicy(m.NativeMinReceivers, m.NativeMaxWait, m.NativeSettle),
			RequestLimiter: pxeLimit,
		}
		for _, r := range m.Start {
			mc.NativeStartRules = append(mc.NativeStartRules, mtftp.StartRule{Pattern: r.Files, StartPolicy: mtftp.StartPolicy{
				MinReceivers: r.MinReceivers, MaxWait: r.MaxWait.Duration, Settle: r.Settle.Duration}})
		}
		if err := mc.Init(); err != nil {
			return fmt.Errorf("mtftp: %w", err)
		}
		if m.Enabled {
			srv.Multicast = mc
		}
	}
	var web *mirror.Server
	if ports.web != nil {
		root := cfg.HTTP.Root
		if root == "" {
			root = cfg.TFTP.Root
		}
		dir, src, err := ups.local(root)
		if err != nil {
			return fmt.Errorf("http.root: %w", err)
		}
		web = &mirror.Server{Root: dir, Source: src, Log: log, MaxConns: cfg.HTTP.MaxConns, MaxConnsPerIP: cfg.HTTP.MaxConnsPerIP,
			PagesAllow: config.ParsePrefixes(cfg.HTTP.APIAllow), PagesHosts: cfg.HTTP.APIHosts}
		if err := web.Open(); err != nil {
			return fmt.Errorf("http.root: %w", err)
		}
	}
	dhcpSrv := newDHCP(cfg, log, mc)
	if dhcpSrv != nil {
		dhcpSrv.Sockets = ports.dhcp
	}
	tm := newTemplates(cfg, log, dhcpSrv)
	if tm != nil {
		if err := tm.Open(); err != nil {
			return fmt.Errorf("templates.dir: %w", err)
		}
		defer tm.Close()
		srv.Virtual = tm
		if web != nil {
			web.Templates = tm
		}
	}
	var tasks *imaging.Manager
	if im := cfg.Imaging; im.Dir != "" {
		if fi, err := os.Stat(im.Dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("imaging.dir: %s is not a directory", im.Dir)
		}
		prefix, _ := config.ImagingPrefix(cfg.TFTP.Root, im.Dir)
		if tasks, err = newImaging(cfg, prefix, log); err != nil {
			return err
		}
		defer func() {
			if err := tasks.Close(); err != nil {
				log.Error().Err(err).Msg("imaging: state not saved at exit")
			}
		}()
		if tm != nil {
			tm.Imaging = imagingDecider{m: tasks, tftpPort: portOf(cfg.TFTP.Listen)}
		} else if len(im.Tasks) > 0 {
			log.Warn().Msg("imaging: tasks are set but templates.dir is not: no boot config reads {{.Imaging}}, so no machine gets the deploy environment")
		}
		if web != nil {
			capture := &imaging.Server{Dir: im.Dir, Prefix: "/" + prefix + "/", Token: im.UploadToken, MaxImageSize: im.MaxImageSize,
				TaskToken: tasks.CaptureAllowed, Log: log}
			if err := capture.Sweep(); err != nil {
				return fmt.Errorf("imaging.dir: %w", err)
			}
			web.Uploads = capture
			web.Imaging = tasks.AgentHandler()
		}
	}
	if web != nil {
		st := &status.Server{TFTP: srv, MTFTP: mc, DHCP: dhcpSrv, HTTP: web}
		if tasks != nil {
			prefix, _ := config.ImagingPrefix(cfg.TFTP.Root, cfg.Imaging.Dir)
			st.Imaging = tasks.AdminHandler(cfg.Imaging.AdminToken, imagingSessions(mc, prefix))
			st.Collectors = append(st.Collectors, tasks.Collector())
		}
		web.Pages = st.Handler()
	}
	if demoDir != "" {
		printDemoHelp(t.Listen, cfg.HTTP.Listen)
	}

	// SIGINT/SIGTERM: stop accepting, let running transfers finish for
	// shutdown_grace, then stop them. A second signal stops at once.
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	// SIGHUP re-reads the config (reload.go); caught from here on so a
	// reload during start-up does not kill the server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	live := &reloader{load: load, cur: loaded, log: log, tftp: srv, dhcp: dhcpSrv, pxeLimit: pxeLimit, imaging: tasks}
	hard, hardStop := context.WithCancel(context.Background())
	defer hardStop()
	exits := make(chan exit, 4)
	running := 0
	run := func(what string, f func() error) {
		running++
		go func() { exits <- exit{what, f()} }()
	}
	run("tftp", func() error { return srv.Serve(hard, ports.tftp) })
	if web != nil {
		run("http", func() error { return web.Serve(hard, ports.web) })
	}
	if dhcpSrv != nil {
		run("dhcp", func() error { return dhcpSrv.Serve(hard) })
	}
	var first error
	if mc != nil {
		// PXE MTFTP's port (1759) needs no privilege: it opens here.
		run("mtftp", func() error { return mc.Serve(hard) })
	}
	for {
		select {
		case <-hup:
			live.reload()
			continue
		case e := <-exits:
			// A service that stops by itself is a failure (a port in use, say):
			// stop the others and report it.
			running--
			if first == nil {
				first = fmt.Errorf("%s: %w", e.what, e.err)
				if e.err == nil {
					first = fmt.Errorf("%s stopped unexpectedly", e.what)
				}
			}
			hardStop()
		case <-sigCtx.Done():
			stopSignals()
			grace := live.cur.TFTP.ShutdownGrace.Duration
			log.Info().Dur("grace", grace).Int("active", srv.Active()).Msg("shutting down")
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			second, stop2 := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
			defer stop2()
			// Every service drains at once, each until the grace period ends;
			// only when all are done (or out of time) is the rest cut off.
			var wg sync.WaitGroup
			drain := func(what string, shutdown func(context.Context) error) {
				wg.Go(func() {
					if err := shutdown(second); err != nil {
						log.Warn().Err(err).Str("service", what).Msg("stopped before it finished")
					}
				})
			}
			drain("tftp", srv.Shutdown)
			if web != nil {
				drain("http", web.Shutdown)
			}
			if dhcpSrv != nil {
				drain("dhcp", dhcpSrv.Shutdown) // flushes the lease file after the last reply
			}
			if mc != nil {
				drain("mtftp", mc.Shutdown)
			}
			wg.Wait()
			hardStop()
		}
		break
	}

	for ; running > 0; running-- {
		e := <-exits
		if e.err != nil && !errors.Is(e.err, tftp.ErrServerClosed) && !errors.Is(e.err, dhcp.ErrServerClosed) &&
			!errors.Is(e.err, mtftp.ErrServerClosed) && first == nil {
			first = fmt.Errorf("%s: %w", e.what, e.err)
		}
	}
	return first
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
		cfg.TFTP.Listen = demoListen
		cfg.TFTP.Root = "(embedded demo root)"
		cfg.HTTP.Listen = demoHTTP
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

func printDemoHelp(listen, httpListen string) {
	host := listen
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

`, strings.TrimSpace(host), httpListen)
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
