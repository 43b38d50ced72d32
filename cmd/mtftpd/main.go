// Command mtftpd is a netboot and imaging server in one binary: TFTP,
// multicast TFTP (RFC 2090, PXE MTFTP and mtftpd's native dialect), DHCP
// and ProxyDHCP, an HTTP mirror, disk images and the reimaging of rooms,
// with the client, load-generator, image and deploy-agent commands beside
// it. This file wires packages together and parses flags; it holds no
// protocol logic.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `mtftpd — multicast TFTP imaging server

Usage:
  mtftpd serve [--config FILE] [--demo] [--print-config] [--<section>.<key> VALUE ...]
  mtftpd get [--blksize N] [--windowsize N] [--tsize] [--netascii] [--multicast [--min-receivers N] [--max-wait D]] [-o FILE] HOST[:PORT] REMOTE
  mtftpd status [--watch] [URL]
  mtftpd image create [--chunk-size N] SRC -o IMAGE
  mtftpd image info [--json] IMAGE
  mtftpd image verify IMAGE
  mtftpd image deploy [--http URL] [--unicast] [--assume-blank] [--no-resume] [--verify] SERVER IMAGE DISK
  mtftpd image capture [--token-file F] DISK URL
  mtftpd imaging add --name N (--deploy IMAGE | --capture NAME) [--mac M]... [--host H]... [--unknown] [--after reboot|poweroff|wait] [--retries N]
  mtftpd imaging list | cancel NAME   [--server URL] [--config FILE] [--token T]
  mtftpd image initrd -o deploy.cpio.gz [--kernel-modules DIR] [--modules a,b,...] [--binary PATH]
  mtftpd agent [--cmdline TEXT] [--init] [--no-net] [--no-after]
  mtftpd bench tftp --target HOST:PORT --file NAME --clients N [--profile bios|uefi|ipxe|linux|custom] [--duration D] [--verify sha256:HEX] [--json FILE]
  mtftpd bench compare A.json B.json
  mtftpd bench dhcp --iface IF --clients N [--concurrency C] [--pxe] [--arch N] [--release] [--timeout D] [--json FILE]
  mtftpd version

Run 'mtftpd serve --help' or 'mtftpd get --help' for the flags.
`

func main() {
	// As /init of the deploy environment (docs/imaging.md, "Agent") the
	// kernel starts mtftpd as PID 1, with no subcommand to read.
	if os.Getpid() == 1 {
		runAsInit()
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = runServe(os.Args[2:])
	case "get":
		err = runGet(os.Args[2:])
	case "bench":
		err = runBench(os.Args[2:])
	case "status":
		err = runStatus(os.Args[2:])
	case "image":
		err = runImage(os.Args[2:])
	case "imaging":
		err = runImaging(os.Args[2:])
	case "agent":
		err = runAgent(os.Args[2:])
	case "version", "--version", "-v":
		fmt.Println("mtftpd", buildVersion())
	case "help", "--help", "-h":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "mtftpd: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mtftpd %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
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

// parseArgs gives fs its usage line and parses args; help is true when the
// user asked for --help (already printed), which is not an error.
func parseArgs(fs *flag.FlagSet, usage string, args []string) (help bool, err error) {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, err
	}
	return false, nil
}
