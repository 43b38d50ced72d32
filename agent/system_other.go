//go:build !linux

package agent

import (
	"context"
	"errors"
	"io"
	"net"
)

// ModuleList is the initramfs's list of module files, in load order.
const ModuleList = "/etc/mtftpd-modules"

// ErrUnsupported: the deploy environment is Linux only.
var ErrUnsupported = errors.New("agent: the deploy environment needs Linux")

// Init does nothing outside Linux.
func Init(out io.Writer) {}

// LoadModules loads nothing outside Linux.
func LoadModules(out io.Writer, list string) int { return 0 }

// NetUp is Linux only.
func NetUp(ctx context.Context, out io.Writer, sysRoot string, mac net.HardwareAddr) (string, net.HardwareAddr, error) {
	return "", nil, ErrUnsupported
}

// Finish is Linux only.
func Finish(out io.Writer, action string) error { return ErrUnsupported }

// ReadCmdline is Linux only.
func ReadCmdline() (string, error) { return "", ErrUnsupported }
