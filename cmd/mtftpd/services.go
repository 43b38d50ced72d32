package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/imaging"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/mirror"
	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/ra"
	"github.com/mtftpd/mtftpd/status"
	"github.com/mtftpd/mtftpd/tftp"
)

// Mappings kept idle between transfers (filestore.KeepIdle): a boot
// server's working set is a handful of loaders, kernels and initrds (and
// images); 32 covers it, and a minute spans the gaps between the machines
// of a room that boot one after another. Each idle mapping holds an open
// descriptor and the page tables of what was read; a file deleted or
// replaced on disk frees its old version's space within the minute.
const (
	idleMappings   = 32
	idleMappingTTL = time.Minute
)

// services are what serve runs, built from the validated config on the
// ports opened before the privilege drop. The optional ones are nil when
// off.
type services struct {
	tftp     *tftp.Server
	mtftp    *mtftp.Server // multicast and PXE MTFTP (nil when both are off)
	pxeLimit *tftp.SourceLimiter
	web      *mirror.Server // the HTTP mirror and status pages (nil without http.listen)
	dhcp     *dhcp.Server
	dhcp6    *dhcp.Server6    // nil when [dhcp6] is off
	ra       *ra.Advertiser   // IPv6 router advertisements (nil when off or no interface could)
	imaging  *imaging.Manager // nil without imaging.dir
	ports    *ports
	demoDir  string   // the demo root written for --demo, else ""
	closers  []func() // what Close releases, in reverse order
}

// service is one running service: its Serve and Shutdown.
type service struct {
	what     string
	serve    func(context.Context) error
	shutdown func(context.Context) error
}

// running lists the services that run.
func (s *services) running() []service {
	serveTFTP := func(ctx context.Context) error { return s.tftp.Serve(ctx, s.ports.tftp) }
	if s.tftp.SinglePort {
		serveTFTP = func(ctx context.Context) error {
			return s.tftp.ServeSinglePort(ctx, append([]*net.UDPConn{s.ports.tftp}, s.ports.tftpMore...))
		}
	}
	out := []service{{"tftp", serveTFTP, s.tftp.Shutdown}}
	if s.web != nil {
		out = append(out, service{"http", func(ctx context.Context) error { return s.web.Serve(ctx, s.ports.web) }, s.web.Shutdown})
	}
	if s.dhcp != nil {
		// Shutdown flushes the lease file after the last reply.
		out = append(out, service{"dhcp", s.dhcp.Serve, s.dhcp.Shutdown})
	}
	if s.dhcp6 != nil {
		out = append(out, service{"dhcp6", func(ctx context.Context) error { return s.dhcp6.Serve(ctx, s.ports.dhcp6) }, s.dhcp6.Shutdown})
	}
	if s.ra != nil {
		out = append(out, service{"ra", s.ra.Serve, s.ra.Shutdown})
	}
	if s.mtftp != nil {
		// PXE MTFTP's port (1759) needs no privilege: Serve opens it.
		out = append(out, service{"mtftp", s.mtftp.Serve, s.mtftp.Shutdown})
	}
	return out
}

// Close releases what buildServices opened (also after it failed half
// way).
func (s *services) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// buildServices turns the validated config into the services: the roots
// (a directory, the demo root, or an origin cache), TFTP, multicast,
// the HTTP mirror, DHCP, per-host templates, imaging and the status
// pages. Nothing is served yet. Close the result even on error.
func buildServices(cfg config.Config, demo bool, p *ports, log zerolog.Logger) (*services, error) {
	s := &services{ports: p}
	if demo && cfg.TFTP.Root == demoRoot {
		dir, err := writeDemoRoot()
		if err != nil {
			return s, err
		}
		s.closers = append(s.closers, func() { os.RemoveAll(dir) })
		s.demoDir, cfg.TFTP.Root = dir, dir
	}
	ups := &origins{cfg: cfg.Origin, log: log}
	s.closers = append(s.closers, ups.Close)
	tftpDir, tftpSource, err := ups.local(cfg.TFTP.Root)
	if err != nil {
		return s, fmt.Errorf("tftp.root: %w", err)
	}
	store, err := filestore.Open(tftpDir)
	if err != nil {
		return s, fmt.Errorf("tftp.root: %w", err)
	}
	s.closers = append(s.closers, func() { store.Close() })
	// Boot files are asked for again and again, often one client after
	// another: keep their mappings between transfers (docs/design.md,
	// "Mappings kept idle").
	store.KeepIdle(idleMappings, idleMappingTTL)
	if tftpSource != nil {
		store.SetSource(tftpSource)
	}
	s.tftp = newTFTP(cfg.TFTP, store, log)
	// The PXE MTFTP port's requests are limited per address like the
	// TFTP port's, by the same keys, in a table of their own.
	s.pxeLimit = tftp.NewSourceLimiter(cfg.TFTP.MaxRequestRate, cfg.TFTP.RequestBurst)
	if m := cfg.MTFTP; m.Enabled || m.PXEListen.IsValid() {
		if s.mtftp, err = newMTFTP(cfg, store, s.pxeLimit, log); err != nil {
			return s, err
		}
		if m.Enabled {
			s.tftp.Multicast = s.mtftp
		}
	}
	if p.web != nil {
		if s.web, err = newWeb(cfg, ups, log); err != nil {
			return s, err
		}
	}
	if s.dhcp = newDHCP(cfg, log, s.mtftp); s.dhcp != nil {
		s.dhcp.Sockets = p.dhcp
	}
	if p.raErr != nil {
		log.Warn().Err(p.raErr).Msg("ipv6: no router advertisements (dhcp.router_advert); iPXE waits for IPv6 autoconfiguration")
	} else if p.ra != nil {
		s.ra = &ra.Advertiser{Ifaces: p.ra, Log: log}
	}
	if cfg.DHCP6.Enabled {
		s.dhcp6 = newDHCP6(cfg, log)
		for _, f := range p.ra {
			if slices.Contains(cfg.DHCP6.Interfaces, f.Name) {
				f.DHCPv6 = cfg.DHCP6.Prefix                     // M=1 and the prefix where DHCPv6 serves
				f.PrefixLifetime = cfg.DHCP6.LeaseTime.Duration // on-link as long as a lease (0: 1 h, as DHCPv6's)
			}
		}
	}
	tm := newTemplates(cfg, log, s.dhcp)
	if tm != nil {
		if err := tm.Open(); err != nil {
			return s, fmt.Errorf("templates.dir: %w", err)
		}
		s.closers = append(s.closers, func() { tm.Close() })
		s.tftp.Virtual = tm
		if s.web != nil {
			s.web.Templates = tm
		}
	}
	if cfg.Imaging.Dir != "" {
		if err := s.buildImaging(cfg, tm, log); err != nil {
			return s, err
		}
	}
	if s.web != nil {
		st := &status.Server{TFTP: s.tftp, MTFTP: s.mtftp, DHCP: s.dhcp, DHCP6: s.dhcp6, HTTP: s.web}
		if s.imaging != nil {
			prefix, _ := config.ImagingPrefix(cfg.TFTP.Root, cfg.Imaging.Dir)
			st.Imaging = s.imaging.AdminHandler(cfg.Imaging.AdminToken, imagingSessions(s.mtftp, prefix))
			st.Collectors = append(st.Collectors, s.imaging.Collector())
		}
		s.web.Pages = st.Handler()
	}
	return s, nil
}

// newTFTP is the unicast server of [tftp].
func newTFTP(t config.TFTP, store *filestore.Store, log zerolog.Logger) *tftp.Server {
	return &tftp.Server{
		Files: store, WriteDir: t.WriteDir, AllowOverwrite: t.AllowOverwrite, MaxUploadSize: t.MaxUploadSize,
		WriteQuota:   writeQuota(t.WriteQuota),
		MaxBlockSize: t.MaxBlockSize, AllowFragments: t.AllowFragments, MaxWindow: t.MaxWindow, MaxWindowBytes: t.MaxWindowBytes,
		InitialRTO: t.InitialRTO.Duration, MinRTO: t.MinRTO.Duration, MaxRTO: t.MaxRTO.Duration, Retries: t.Retries,
		StallTimeout: t.StallTimeout.Duration,
		MaxSessions:  t.MaxSessions, MaxPerClient: t.MaxPerClient, SessionLifetime: t.Lifetime.Duration,
		MaxUnconfirmed: t.MaxUnconfirmed, MaxUnconfirmedPerPrefix: t.MaxUnconfirmedPerPrefix, ConfirmTimeout: t.ConfirmTimeout.Duration,
		MaxRequestRate: t.MaxRequestRate, RequestBurst: t.RequestBurst,
		SinglePort: t.SinglePort, Log: log,
	}
}

// newMTFTP is the multicast server of [mtftp] (with [tftp]'s timers).
func newMTFTP(cfg config.Config, store *filestore.Store, limit *tftp.SourceLimiter, log zerolog.Logger) (*mtftp.Server, error) {
	m, t := cfg.MTFTP, cfg.TFTP
	mc := &mtftp.Server{
		Files: store, GroupRange: m.GroupRange, Port: m.Port, Interface: m.Interface, TTL: m.TTL,
		PXEGroup: m.PXEGroup, PXEClientPort: m.PXEClientPort,
		PXEFileGroups: m.PXEFileGroups, PXEFilePort: m.PXEFilePort,
		InitialRTO: t.InitialRTO.Duration, MinRTO: t.MinRTO.Duration, MaxRTO: t.MaxRTO.Duration,
		SessionLifetime: t.Lifetime.Duration, Log: log,
		NativeRate: int64(m.NativeRateMbps) * 1e6 / 8, NativeStart: startPolicy(m.NativeMinReceivers, m.NativeMaxWait, m.NativeSettle),
		RequestLimiter: limit,
	}
	if m.PXEListen.IsValid() {
		mc.PXEListen = m.PXEListen.String()
	}
	for _, r := range m.Start {
		mc.NativeStartRules = append(mc.NativeStartRules, mtftp.StartRule{Pattern: r.Files, StartPolicy: mtftp.StartPolicy{
			MinReceivers: r.MinReceivers, MaxWait: r.MaxWait.Duration, Settle: r.Settle.Duration}})
	}
	if err := mc.Init(); err != nil {
		return nil, fmt.Errorf("mtftp: %w", err)
	}
	return mc, nil
}

// newWeb is the HTTP mirror of [http], over http.root or tftp.root.
func newWeb(cfg config.Config, ups *origins, log zerolog.Logger) (*mirror.Server, error) {
	root := cfg.HTTP.Root
	if root == "" {
		root = cfg.TFTP.Root
	}
	dir, src, err := ups.local(root)
	if err != nil {
		return nil, fmt.Errorf("http.root: %w", err)
	}
	web := &mirror.Server{Root: dir, Source: src, Log: log, MaxConns: cfg.HTTP.MaxConns, MaxConnsPerIP: cfg.HTTP.MaxConnsPerIP,
		PagesAllow: config.Prefixes(cfg.HTTP.APIAllow), PagesHosts: cfg.HTTP.APIHosts}
	if err := web.Open(); err != nil {
		return nil, fmt.Errorf("http.root: %w", err)
	}
	return web, nil
}

// buildImaging starts the reimaging task manager of [imaging] and hands
// it to the templates ({{.Imaging}}) and the mirror (captures, agents).
func (s *services) buildImaging(cfg config.Config, tm *mirror.Templates, log zerolog.Logger) error {
	im := cfg.Imaging
	if fi, err := os.Stat(im.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("imaging.dir: %s is not a directory", im.Dir)
	}
	prefix, _ := config.ImagingPrefix(cfg.TFTP.Root, im.Dir)
	tasks, err := newImaging(cfg, prefix, log)
	if err != nil {
		return err
	}
	s.imaging = tasks
	s.closers = append(s.closers, func() {
		if err := tasks.Close(); err != nil {
			log.Error().Err(err).Msg("imaging: state not saved at exit")
		}
	})
	if tm != nil {
		tm.Imaging = imagingDecider{m: tasks, tftpPort: strconv.Itoa(int(cfg.TFTP.Listen.Port()))}
	} else if len(im.Tasks) > 0 {
		log.Warn().Msg("imaging: tasks are set but templates.dir is not: no boot config reads {{.Imaging}}, so no machine gets the deploy environment")
	}
	if s.web != nil {
		capture := &imaging.Server{Dir: im.Dir, Prefix: "/" + prefix + "/", Token: im.UploadToken, MaxImageSize: im.MaxImageSize,
			TaskToken: tasks.CaptureAllowed, Log: log}
		if err := capture.Sweep(); err != nil {
			return fmt.Errorf("imaging.dir: %w", err)
		}
		s.web.Uploads = capture
		s.web.Imaging = tasks.AgentHandler()
	}
	return nil
}
