package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/internal/privdrop"
	"github.com/mtftpd/mtftpd/internal/udpio"
	"github.com/mtftpd/mtftpd/ra"
	"github.com/mtftpd/mtftpd/tftp"
)

// ports are the sockets that may need root or CAP_NET_BIND_SERVICE (69,
// 80, 67, 4011; raw ICMPv6 needs CAP_NET_RAW). serve opens them all first, then drops privileges, and
// only then reads a request: nothing a client sends is ever handled with
// the privileges of the start (issue 13, finding 8).
type ports struct {
	tftp *net.UDPConn
	// tftpMore are the other SO_REUSEPORT sockets of tftp.single_port
	// (one per core, opened with the first, before privileges drop).
	tftpMore []*net.UDPConn
	web      net.Listener   // nil without http.listen
	dhcp     *dhcp.Sockets  // nil with dhcp.mode off
	dhcp6    *dhcp.Sockets6 // nil with dhcp6 off
	// ra are the raw ICMPv6 sockets of dhcp.router_advert = "auto"
	// (CAP_NET_RAW); raErr why there are none (best effort: logged, the
	// server starts without them).
	ra    []*ra.Iface
	raErr error
}

// openPorts opens every privileged socket of cfg, or none.
func openPorts(ctx context.Context, cfg config.Config) (*ports, error) {
	p := &ports{}
	var err error
	if cfg.TFTP.SinglePort {
		pcs, err := tftp.ListenReusePort(cfg.TFTP.Listen, runtime.GOMAXPROCS(0))
		if err != nil {
			return nil, err
		}
		p.tftp, p.tftpMore = pcs[0], pcs[1:]
	} else if p.tftp, err = net.ListenUDP(udpio.Network("udp", cfg.TFTP.Listen.Addr()), net.UDPAddrFromAddrPort(cfg.TFTP.Listen)); err != nil {
		return nil, fmt.Errorf("tftp: %w", err)
	}
	if cfg.HTTP.Listen.IsValid() {
		if p.web, err = net.Listen(udpio.Network("tcp", cfg.HTTP.Listen.Addr()), cfg.HTTP.Listen.String()); err != nil {
			p.Close()
			return nil, fmt.Errorf("http: %w", err)
		}
	}
	if d := cfg.DHCP; d.Mode != "off" {
		if p.dhcp, err = dhcp.Listen(ctx, dhcp.Mode(d.Mode), d.Listen, d.ProxyPort, d.Interfaces); err != nil {
			p.Close()
			return nil, err
		}
	}
	if d6 := cfg.DHCP6; d6.Enabled {
		if p.dhcp6, err = dhcp.Listen6(ctx, d6.Listen, d6.Interfaces); err != nil {
			p.Close()
			return nil, err
		}
	}
	if names, ok := raInterfaces(cfg); ok {
		p.ra, p.raErr = ra.Open(names, zerolog.Nop())
	}
	return p, nil
}

// raInterfaces are the interfaces of dhcp.router_advert = auto: those of
// DHCP (all when dhcp.interfaces is empty) and of DHCPv6; ok is false when
// there are none (both off, or router_advert off).
func raInterfaces(cfg config.Config) (names []string, ok bool) {
	d, d6 := cfg.DHCP, cfg.DHCP6
	if d.RouterAdv != "auto" || (d.Mode == "off" && !d6.Enabled) {
		return nil, false
	}
	if d.Mode != "off" && len(d.Interfaces) == 0 {
		return nil, true // every interface
	}
	if d.Mode != "off" {
		names = append(names, d.Interfaces...)
	}
	if d6.Enabled {
		for _, n := range d6.Interfaces {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names, true
}

// Close closes the sockets (each service has closed its own already when
// it stopped; closing again is harmless).
func (p *ports) Close() {
	p.tftp.Close()
	for _, c := range p.tftpMore {
		c.Close()
	}
	if p.web != nil {
		p.web.Close()
	}
	if p.dhcp != nil {
		p.dhcp.Close()
	}
	if p.dhcp6 != nil {
		p.dhcp6.Close()
	}
	for _, f := range p.ra {
		f.Conn.Close()
	}
}

// dropPrivileges becomes server.user (and server.group), then, running
// as any user but root, gives up every capability it holds
// (CAP_NET_BIND_SERVICE from systemd's AmbientCapabilities= or file
// capabilities): the ports are open, nothing else needs one. With
// server.user set, mtftpd never goes on as root, and it never goes on
// with a capability it could not drop: either failure stops the server.
func dropPrivileges(cfg config.Config, log zerolog.Logger) error {
	if err := switchUser(cfg, log); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		return nil // root without server.user: warned in switchUser
	}
	before, err := privdrop.DropCapabilities()
	if err != nil {
		return fmt.Errorf("capabilities (held: permitted %#x, ambient %#x): %w; refusing to go on with them", before.Permitted, before.Ambient, err)
	}
	if !before.Empty() {
		log.Info().Str("permitted", fmt.Sprintf("%#x", before.Permitted)).Str("ambient", fmt.Sprintf("%#x", before.Ambient)).
			Msg("capabilities dropped: no thread holds any now (no_new_privs set)")
	}
	return nil
}

// switchUser is the server.user part of dropPrivileges.
func switchUser(cfg config.Config, log zerolog.Logger) error {
	if cfg.Server.User == "" {
		if os.Geteuid() == 0 {
			log.Warn().Msg("running as root: set server.user to drop privileges after the ports are open")
		}
		return nil
	}
	id, err := privdrop.Lookup(cfg.Server.User, cfg.Server.Group)
	if err != nil {
		return fmt.Errorf("server.user: %w", err)
	}
	switch euid := os.Geteuid(); {
	case euid == id.UID:
		// Started as that user already (systemd User=, ambient
		// CAP_NET_BIND_SERVICE): nothing to drop.
		return nil
	case euid != 0:
		return fmt.Errorf("server.user %q (uid %d): started as uid %d, which cannot switch users", cfg.Server.User, id.UID, euid)
	}
	if err := privdrop.Drop(id); err != nil {
		return fmt.Errorf("server.user %q: %w; refusing to go on as root", cfg.Server.User, err)
	}
	log.Info().Str("user", id.User).Int("uid", id.UID).Int("gid", id.GID).Ints("groups", id.Groups).
		Msg("privileges dropped: every thread runs as this user")
	return nil
}

// checkWritable makes sure, as the user the server now runs as, that it
// can write where it will: tftp.write_dir and the lease file's directory
// must exist and be writable; origin.cache_dir is created if missing
// (each origin's sub-directories are created by origin.Cache.Open, after
// this, as the same user). A failure stops the server at start, naming
// the key, instead of every upload, lease write or fetch failing later.
func checkWritable(cfg config.Config) error {
	if cfg.Origin.CacheDir != "" && (config.IsURL(cfg.TFTP.Root) || config.IsURL(cfg.HTTP.Root)) {
		if err := os.MkdirAll(cfg.Origin.CacheDir, 0o750); err != nil {
			return fmt.Errorf("origin.cache_dir: %w%s", err, systemdHint)
		}
	}
	for _, d := range []struct{ key, dir string }{
		{"tftp.write_dir", cfg.TFTP.WriteDir},
		{"origin.cache_dir", cfg.Origin.CacheDir},
		{"dhcp.lease_file", leaseDir(cfg)},
		{"imaging.dir", captureDir(cfg.Imaging)},
		{"imaging.state_file", stateDir(cfg.Imaging)},
	} {
		if d.dir == "" {
			continue
		}
		f, err := os.CreateTemp(d.dir, ".mtftpd-write-check-")
		if err != nil {
			who := fmt.Sprintf("uid %d", os.Geteuid())
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s: %s does not exist: %w", d.key, d.dir, err)
			}
			return fmt.Errorf("%s: %s is not writable by %s: %w%s", d.key, d.dir, who, err, systemdHint)
		}
		f.Close()
		os.Remove(f.Name())
	}
	return nil
}

// systemdHint ends a "not writable" error: under dist/mtftpd.service the
// usual cause is ProtectSystem=strict.
const systemdHint = " (under systemd's ProtectSystem=strict, a directory outside StateDirectory=/CacheDirectory= must be listed in ReadWritePaths=)"

func leaseDir(cfg config.Config) string {
	if cfg.DHCP.Mode == "off" || cfg.DHCP.LeaseFile == "" {
		return ""
	}
	return filepath.Dir(cfg.DHCP.LeaseFile)
}

// captureDir is the imaging dir when captures may write there (the
// upload token, a capture task, or an admin token that may add one),
// else "".
func captureDir(m config.Imaging) string {
	captures := m.UploadToken != "" || m.AdminToken != ""
	for _, t := range m.Tasks {
		captures = captures || t.Action == "capture"
	}
	if !captures {
		return ""
	}
	return m.Dir
}

// stateDir is the directory of the imaging state file, if any.
func stateDir(m config.Imaging) string {
	if m.Dir == "" || m.StateFile == "" {
		return ""
	}
	return filepath.Dir(m.StateFile)
}
