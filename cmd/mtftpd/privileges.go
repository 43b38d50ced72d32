package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/internal/privdrop"
)

// listenPorts opens the TFTP socket and, if httpAddr is set, the mirror's
// listener: both may need root or CAP_NET_BIND_SERVICE (69, 80).
func listenPorts(tftpAddr, httpAddr string) (*net.UDPConn, net.Listener, error) {
	ua, err := net.ResolveUDPAddr("udp4", tftpAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("tftp.listen: %w", err)
	}
	pc, err := net.ListenUDP("udp4", ua)
	if err != nil {
		return nil, nil, fmt.Errorf("tftp: %w", err)
	}
	if httpAddr == "" {
		return pc, nil, nil
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("http: %w", err)
	}
	return pc, ln, nil
}

// afterBind waits (bounded) for the DHCP sockets, then drops privileges
// to server.user. A service that fails meanwhile is handed back on exits.
// With server.user set, mtftpd never goes on as root: a failed drop is an
// error that stops the server.
func afterBind(cfg config.Config, log zerolog.Logger, d *dhcp.Server, exits chan exit) error {
	if cfg.Server.User == "" {
		if os.Geteuid() == 0 {
			log.Warn().Msg("running as root: set server.user to drop privileges after the ports are open")
		}
		return nil
	}
	if d != nil {
		select {
		case <-d.Ready():
		case e := <-exits:
			exits <- e // the caller reports it
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("server.user: the DHCP sockets did not open within 30 s; not dropping privileges blindly")
		}
	}
	return dropPrivileges(cfg, log)
}

// dropPrivileges becomes server.user (and server.group) and checks that
// every directory the server writes to is still writable.
func dropPrivileges(cfg config.Config, log zerolog.Logger) error {
	id, err := privdrop.Lookup(cfg.Server.User, cfg.Server.Group)
	if err != nil {
		return fmt.Errorf("server.user: %w", err)
	}
	switch euid := os.Geteuid(); {
	case euid == id.UID:
		// Started as that user already (systemd User=, ambient
		// CAP_NET_BIND_SERVICE): nothing to drop.
	case euid != 0:
		return fmt.Errorf("server.user %q (uid %d): started as uid %d, which cannot switch users", cfg.Server.User, id.UID, euid)
	default:
		if err := privdrop.Drop(id); err != nil {
			return fmt.Errorf("server.user %q: %w; refusing to go on as root", cfg.Server.User, err)
		}
	}
	for key, dir := range map[string]string{
		"tftp.write_dir": cfg.TFTP.WriteDir, "origin.cache_dir": cfg.Origin.CacheDir, "dhcp.lease_file": leaseDir(cfg.DHCP.LeaseFile), "imaging.dir": captureDir(cfg.Imaging),
	} {
		if dir == "" {
			continue
		}
		f, err := os.CreateTemp(dir, ".mtftpd-write-check-")
		if err != nil {
			return fmt.Errorf("%s: %s is not writable by user %s: %w", key, dir, id.User, err)
		}
		f.Close()
		os.Remove(f.Name())
	}
	log.Info().Str("user", id.User).Int("uid", id.UID).Int("gid", id.GID).Ints("groups", id.Groups).
		Msg("privileges dropped: every thread runs as this user")
	return nil
}

func leaseDir(leaseFile string) string {
	if leaseFile == "" {
		return ""
	}
	return filepath.Dir(leaseFile)
}

// captureDir is the imaging dir when captures may write there, else "".
func captureDir(m config.Imaging) string {
	if m.UploadToken == "" {
		return ""
	}
	return m.Dir
}
