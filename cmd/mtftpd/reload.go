package main

import (
	"slices"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/imaging"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/tftp"
)

// reloader applies a re-read config on SIGHUP. It runs in serve's main
// goroutine only.
type reloader struct {
	load  func() (config.Config, error)
	cur   config.Config // the running config, as loaded
	log   zerolog.Logger
	tftp  *tftp.Server
	dhcp  *dhcp.Server  // nil when DHCP is off
	dhcp6 *dhcp.Server6 // nil when DHCPv6 is off
	// pxeLimit is the PXE MTFTP listener's request limiter (the
	// tftp.max_requests_per_sec and request_burst keys too).
	pxeLimit *tftp.SourceLimiter
	// imaging is the task manager (nil without imaging.dir): a SIGHUP
	// merges the config's [[imaging.task]] into it.
	imaging *imaging.Manager
}

// reload re-reads the config and applies what changed, or keeps the
// running config and logs why not.
func (r *reloader) reload() {
	next, err := r.load()
	if err != nil {
		r.log.Error().Err(err).Msg("config reload: invalid, keeping the running config")
		return
	}
	changed := config.Changed(r.cur, next)
	if len(changed) == 0 {
		r.log.Info().Msg("config reload: nothing changed")
		return
	}
	// Only the keys tagged reload:"yes" (internal/config) apply to the
	// running server. Any other change (listen addresses, roots, DHCP
	// subnets and hosts, multicast, templates, the user) needs a
	// restart: the reload is then refused as a whole, so the server never
	// runs half of each config.
	if restart := config.NeedRestart(changed); len(restart) > 0 {
		r.log.Error().Strs("needs_restart", restart).Strs("changed", changed).
			Msg("config reload: these keys only change with a restart; keeping the running config")
		return
	}
	if r.dhcp != nil && slices.Contains(changed, "dhcp.boot") {
		if err := r.dhcp.SetBootRules(bootRules(next.DHCP.Boot)); err != nil {
			r.log.Error().Err(err).Msg("config reload: dhcp.boot rejected, keeping the running config")
			return
		}
	}
	if r.dhcp6 != nil && slices.Contains(changed, "dhcp.boot") {
		if err := r.dhcp6.SetBootRules(bootRules(next.DHCP.Boot)); err != nil {
			r.log.Error().Err(err).Msg("config reload: dhcp.boot rejected by DHCPv6 (the DHCPv4 server already took it)")
		}
	}
	if slices.Contains(changed, "imaging.task") {
		if r.imaging == nil {
			r.log.Error().Msg("config reload: imaging.task changed but imaging.dir was not set at start; keeping the running config")
			return
		}
		if err := r.imaging.SetConfigTasks(next.Imaging.Tasks); err != nil {
			r.log.Error().Err(err).Msg("config reload: imaging.task rejected, keeping the running config")
			return
		}
	}
	if r.dhcp != nil {
		r.dhcp.SetMaxPerMAC(next.DHCP.MaxPerMAC)
	}
	t := next.TFTP
	r.tftp.Reconfigure(func(s *tftp.Server) {
		s.MaxRequestRate, s.RequestBurst = t.MaxRequestRate, t.RequestBurst
		s.MaxSessions, s.MaxPerClient = t.MaxSessions, t.MaxPerClient
		s.MaxUnconfirmed, s.MaxUnconfirmedPerPrefix, s.ConfirmTimeout = t.MaxUnconfirmed, t.MaxUnconfirmedPerPrefix, t.ConfirmTimeout.Duration
		s.InitialRTO, s.MinRTO, s.MaxRTO = t.InitialRTO.Duration, t.MinRTO.Duration, t.MaxRTO.Duration
		s.Retries, s.StallTimeout, s.SessionLifetime = t.Retries, t.StallTimeout.Duration, t.Lifetime.Duration
		s.MaxBlockSize, s.AllowFragments = t.MaxBlockSize, t.AllowFragments
		s.MaxWindow, s.MaxWindowBytes = t.MaxWindow, t.MaxWindowBytes
		s.AllowOverwrite, s.MaxUploadSize, s.WriteQuota = t.AllowOverwrite, t.MaxUploadSize, writeQuota(t.WriteQuota)
	})
	if r.pxeLimit != nil {
		r.pxeLimit.SetRate(t.MaxRequestRate, t.RequestBurst)
	}
	setLogLevel(next.Log.Level)
	r.cur = next
	r.log.Info().Strs("changed", changed).Msg("config reloaded")
}

// setLogLevel sets the process-wide log level (unknown names: info).
func setLogLevel(name string) {
	lvl, err := zerolog.ParseLevel(name)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.SetGlobalLevel(lvl)
}
