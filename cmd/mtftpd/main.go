// Command mtftpd is a netboot and multicast imaging server in one binary:
// TFTP, multicast TFTP (native, RFC 2090, PXE), DHCP, an HTTP mirror and
// status pages, with the clients, disk-image tools, imaging agent and load
// testers that go with them. This package wires the packages together and
// parses the command line (cli.go holds the command table); it holds no
// protocol logic.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// As /init of the deploy environment (docs/imaging.md, "Agent") the
	// kernel starts mtftpd as PID 1, with no subcommand to read.
	if os.Getpid() == 1 {
		runAsInit()
	}
	err := dispatch(os.Args[1:])
	if err == nil {
		return
	}
	prefix := "mtftpd"
	if c, _ := lookup(os.Args[1:]); c != nil {
		prefix += " " + c.name
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", prefix, err)
	if errors.As(err, new(usageError)) {
		os.Exit(2)
	}
	os.Exit(1)
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return version
}
