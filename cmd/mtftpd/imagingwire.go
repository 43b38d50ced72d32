package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/imaging"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/mirror"
	"github.com/mtftpd/mtftpd/mtftp"
)

// newImaging builds the reimaging task manager from [imaging] and the
// [[dhcp.host]] names, and loads its state. A corrupt state file is
// logged (it was moved aside) and the server goes on; any other error
// stops the start.
func newImaging(cfg config.Config, prefix string, log zerolog.Logger) (*imaging.Manager, error) {
	im := cfg.Imaging
	m := &imaging.Manager{Dir: im.Dir, Prefix: prefix, Kernel: im.Kernel, Initrd: im.Initrd, Cmdline: im.Cmdline,
		MaxUnknown: im.MaxUnknown, TFTPPort: strconv.Itoa(int(cfg.TFTP.Listen.Port())), StateFile: im.StateFile, Hosts: map[string]net.HardwareAddr{}, Log: log}
	for _, h := range cfg.DHCP.Hosts {
		if len(h.MAC) > 0 && h.Hostname != "" {
			m.Hosts[h.Hostname] = net.HardwareAddr(h.MAC)
		}
	}
	if err := m.Open(im.Tasks); err != nil {
		if !errors.Is(err, imaging.ErrCorruptState) {
			return nil, fmt.Errorf("imaging: %w", err)
		}
		log.Error().Err(err).Msg("imaging: state file corrupt")
	}
	return m, nil
}

// imagingDecider lets the templates ask the task manager ({{.Imaging}}):
// the deploy environment is pointed at the address the machine reached
// us at, on the TFTP port.
type imagingDecider struct {
	m        *imaging.Manager
	tftpPort string
}

func (d imagingDecider) Decide(mac net.HardwareAddr, host string, known bool, httpBase string, local netip.Addr) mirror.Imaging {
	server := ""
	if local.IsValid() && !local.IsUnspecified() {
		server = net.JoinHostPort(local.Unmap().String(), d.tftpPort)
	}
	return mirror.Imaging(d.m.Decide(mac, host, known, imaging.Via{HTTP: httpBase, Server: server}))
}

// imagingSessions lists the multicast sessions of files under the
// imaging directory, for GET /api/imaging.
func imagingSessions(mc *mtftp.Server, prefix string) func() []imaging.Session {
	if mc == nil {
		return nil
	}
	return func() []imaging.Session {
		out := []imaging.Session{}
		for _, s := range mc.Sessions() {
			if !strings.HasPrefix(s.File, prefix+"/") {
				continue
			}
			is := imaging.Session{Dialect: s.Dialect, File: s.File, Group: s.Group.String(), Receivers: len(s.Receivers),
				Blocks: s.Blocks, Position: s.Position, Start: s.Start, Size: s.Size}
			is.SessionStats(s.Sent, s.Repairs, s.BlockSize, time.Now())
			out = append(out, is)
		}
		return out
	}
}
