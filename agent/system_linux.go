package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/jsimonetti/rtnetlink/v2/rtnl"
	"golang.org/x/sys/unix"
)

// ModuleList is the initramfs's list of module files, in load order
// (written by package initramfs).
const ModuleList = "/etc/mtftpd-modules"

// Init prepares the deploy environment when the agent is PID 1: it
// mounts proc, sysfs, devtmpfs on /dev and tmpfs on /tmp and /run, and
// loads the modules listed in ModuleList. A mount that is there already
// (the kernel mounts devtmpfs itself with CONFIG_DEVTMPFS_MOUNT) and a
// module that is loaded or fails are noted, not fatal: the drivers that
// matter are checked later, when a NIC or a disk is looked for.
func Init(out io.Writer) {
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fs, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Fprintf(out, Prefix+"mount %s on %s: %v\n", m.fs, m.dir, err)
		}
	}
	LoadModules(out, ModuleList)
}

// LoadModules loads each module file listed in list with finit_module(2);
// one loaded already (EEXIST) is fine. A compressed module (.ko.xz,
// .ko.zst, .ko.gz, kept as the distribution ships it) is handed to the
// kernel with MODULE_INIT_COMPRESSED_FILE, which needs Linux 6.2's
// in-kernel decompression (CONFIG_MODULE_DECOMPRESS).
func LoadModules(out io.Writer, list string) (loaded int) {
	f, err := os.Open(list)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(out, Prefix+"modules: %v\n", err)
		}
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var failed []string
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		flags := 0
		if ext := filepath.Ext(p); ext == ".xz" || ext == ".zst" || ext == ".gz" {
			flags = unix.MODULE_INIT_COMPRESSED_FILE
		}
		mf, err := os.Open(p)
		if err == nil {
			err = unix.FinitModule(int(mf.Fd()), "", flags)
			mf.Close()
		}
		switch {
		case err == nil:
			loaded++
		case errors.Is(err, unix.EEXIST):
		default:
			failed = append(failed, fmt.Sprintf("%s (%v)", filepath.Base(p), err))
		}
	}
	fmt.Fprintf(out, Prefix+"loaded %d modules\n", loaded)
	if len(failed) > 0 {
		fmt.Fprintf(out, Prefix+"modules that failed: %s\n", strings.Join(failed, ", "))
	}
	return loaded
}

// Bounds of bringing the network up: a NIC's driver may take a while to
// probe (15 s), a link to come up after it is set up (10 s, autonegotiation
// of 1000BASE-T takes ~3 s), and a DHCP server to answer (four rounds of
// nclient4's 3 × 4 s).
const (
	nicWait     = 15 * time.Second
	carrierWait = 10 * time.Second
	dhcpRounds  = 4
	entropyWait = 60 * time.Second
)

// waitEntropy waits, bounded, until the kernel's random pool is
// initialised: the DHCP client's transaction ID comes from crypto/rand,
// whose getrandom(2) blocks until then, without bound. A CPU with RDRAND
// (every x86-64 since about 2013) has it at boot; QEMU's TCG default CPU
// has none and, without a virtio-rng device, was seen to wait more than
// five minutes.
func waitEntropy(out io.Writer) error {
	var b [1]byte
	if _, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK); err == nil || !errors.Is(err, unix.EAGAIN) {
		return nil
	}
	fmt.Fprintf(out, Prefix+"waiting for the kernel's random pool (no RDRAND or hardware RNG; QEMU: -device virtio-rng-pci)\n")
	ready := make(chan struct{})
	go func() { // a blocking read makes the kernel gather jitter entropy (random.c, try_to_generate_entropy)
		var b [1]byte
		unix.Getrandom(b[:], 0)
		close(ready)
	}()
	select {
	case <-ready:
		return nil
	case <-time.After(entropyWait):
		return fmt.Errorf("the kernel's random pool is not initialised after %v (no RDRAND, no hardware RNG): give the machine an RNG (QEMU: -device virtio-rng-pci or -cpu max)", entropyWait)
	}
}

// NetUp finds the NIC with mac (nil: the first non-loopback one with a
// carrier), brings it up, gets an address by DHCP and configures it, the
// default route if the lease has a router, and /etc/resolv.conf if it
// names DNS servers. sysRoot is sysfs's mount ("/sys").
//
// Netlink (github.com/jsimonetti/rtnetlink/v2) rather than ioctls: the
// route ioctl (SIOCADDRT) needs struct rtentry, which x/sys/unix does not
// define, and the library shares mdlayher/socket with the DHCP client.
func NetUp(ctx context.Context, out io.Writer, sysRoot string, mac net.HardwareAddr) (string, net.HardwareAddr, error) {
	c, err := rtnl.Dial(nil)
	if err != nil {
		return "", nil, fmt.Errorf("netlink: %w", err)
	}
	defer c.Close()
	if lo, err := net.InterfaceByName("lo"); err == nil {
		c.LinkUp(lo)
	}
	ifc, err := findNIC(ctx, c, sysRoot, mac)
	if err != nil {
		return "", nil, err
	}
	if err := c.LinkUp(ifc); err != nil {
		return "", nil, fmt.Errorf("%s up: %w", ifc.Name, err)
	}
	if !waitCarrier(ctx, sysRoot, ifc.Name, carrierWait) {
		fmt.Fprintf(out, Prefix+"%s has no carrier after %v; trying DHCP anyway\n", ifc.Name, carrierWait)
	}
	if err := waitEntropy(out); err != nil {
		return "", nil, err
	}
	fmt.Fprintf(out, Prefix+"nic %s %s, asking DHCP\n", ifc.Name, ifc.HardwareAddr)
	lease, err := dhcp(ctx, ifc.Name)
	if err != nil {
		return "", nil, err
	}
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	addr := &net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask}
	if err := c.AddrAdd(ifc, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", nil, fmt.Errorf("%s: address %s: %w", ifc.Name, addr, err)
	}
	via := ""
	if r := ack.Router(); len(r) > 0 && r[0].To4() != nil && !r[0].IsUnspecified() {
		def := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if err := c.RouteAdd(ifc, def, r[0].To4()); err != nil && !errors.Is(err, unix.EEXIST) {
			return "", nil, fmt.Errorf("%s: default route via %s: %w", ifc.Name, r[0], err)
		}
		via = " via " + r[0].String()
	}
	if dns := ack.DNS(); len(dns) > 0 {
		var b strings.Builder
		for _, ip := range dns {
			fmt.Fprintf(&b, "nameserver %s\n", ip)
		}
		os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
	}
	fmt.Fprintf(out, Prefix+"address %s on %s%s (from %s)\n", addr, ifc.Name, via, ack.ServerIPAddr)
	return ifc.Name, ifc.HardwareAddr, nil
}

// findNIC waits, bounded, for the NIC with mac; without mac, it brings
// every Ethernet NIC up and takes the first (by name) with a carrier, or
// at the end of the wait the first one at all.
func findNIC(ctx context.Context, c *rtnl.Conn, sysRoot string, mac net.HardwareAddr) (*net.Interface, error) {
	deadline := time.Now().Add(nicWait)
	up := map[string]bool{}
	for {
		ifs := ethernets()
		for _, ifc := range ifs {
			if mac != nil && ifc.HardwareAddr.String() == mac.String() {
				return ifc, nil
			}
			if mac == nil {
				if !up[ifc.Name] {
					c.LinkUp(ifc)
					up[ifc.Name] = true
				}
				if carrier(sysRoot, ifc.Name) {
					return ifc, nil
				}
			}
		}
		if time.Now().After(deadline) {
			if mac == nil && len(ifs) > 0 {
				return ifs[0], nil
			}
			var have []string
			for _, ifc := range ifs {
				have = append(have, ifc.Name+" "+ifc.HardwareAddr.String())
			}
			what := "no NIC"
			if mac != nil {
				what = "no NIC with MAC " + mac.String()
			}
			if len(have) == 0 {
				have = []string{"none (is the driver in the initrd? mtftpd image initrd --modules)"}
			}
			return nil, fmt.Errorf("%s after %v; have %s", what, nicWait, strings.Join(have, ", "))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ethernets lists the non-loopback NICs with a 6-byte address, by name.
func ethernets() []*net.Interface {
	all, _ := net.Interfaces()
	var out []*net.Interface
	for i := range all {
		if all[i].Flags&net.FlagLoopback == 0 && len(all[i].HardwareAddr) == 6 {
			out = append(out, &all[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func carrier(sysRoot, name string) bool {
	b, err := os.ReadFile(filepath.Join(sysRoot, "class/net", name, "carrier"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

func waitCarrier(ctx context.Context, sysRoot, name string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !carrier(sysRoot, name) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func dhcp(ctx context.Context, iface string) (*nclient4.Lease, error) {
	var last error
	for i := 0; i < dhcpRounds; i++ {
		cl, err := nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return nil, fmt.Errorf("DHCP on %s: %w", iface, err)
		}
		lease, err := cl.Request(ctx, dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer))
		cl.Close()
		if err == nil {
			return lease, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("DHCP on %s: no lease after %d rounds: %w", iface, dhcpRounds, last)
}

// Finish does the after action: sync and reboot, or power off, or wait
// for ever. It returns only if reboot(2) fails (not PID 1 of the initial
// namespace, or without CAP_SYS_BOOT).
func Finish(out io.Writer, action string) error {
	unix.Sync()
	switch action {
	case AfterWait:
		for {
			time.Sleep(time.Hour)
		}
	case AfterPoweroff:
		return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	default:
		return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
}

// ReadCmdline returns /proc/cmdline.
func ReadCmdline() (string, error) {
	b, err := os.ReadFile("/proc/cmdline")
	return string(b), err
}
