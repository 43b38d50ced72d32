//go:build linux

package mtftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// udhcpcScript prints what a PXE ROM reads from the offer.
const udhcpcScript = `#!/bin/sh
[ "$1" = bound ] && echo "offer siaddr=$siaddr boot_file=$boot_file opt43=$opt43"
exit 0
`

// pxeOffer is what one BIOS PXE DHCP exchange announced.
type pxeOffer struct {
	siaddr, file string
	group        netip.AddrPort // 43.1, 43.2
	sport        uint16         // 43.3
	tmout, delay byte           // 43.4, 43.5
}

// askDHCPAsBIOSROM runs busybox udhcpc in client i as a BIOS PXE ROM
// (option 60 PXEClient arch 0, option 93 = 0) with user class class, and
// decodes option 43 of the offer it is bound with.
func askDHCPAsBIOSROM(t *testing.T, lab *netlab.Lab, i int, class string) pxeOffer {
	t.Helper()
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	os.WriteFile(script, []byte(udhcpcScript), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := lab.Run(ctx, netlab.Client(i), "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
		"-s", script, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000",
		"-x", "0x4d:"+hex.EncodeToString([]byte(class)), "-O", "43")
	if err != nil {
		t.Fatalf("udhcpc in c%d: %v\n%s", i, err, out)
	}
	var o pxeOffer
	var opt43 string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "offer "); ok {
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "siaddr":
					o.siaddr = v
				case "boot_file":
					o.file = v
				case "opt43":
					opt43 = v
				}
			}
		}
	}
	b, err := hex.DecodeString(opt43)
	if err != nil || len(b) == 0 {
		t.Fatalf("c%d: no option 43 in the offer (%q):\n%s", i, opt43, out)
	}
	var ip netip.Addr
	var cport uint16
	for len(b) >= 2 && b[0] != 255 && len(b) >= 2+int(b[1]) {
		v := b[2 : 2+b[1]]
		switch {
		case b[0] == 1 && len(v) == 4:
			ip = netip.AddrFrom4([4]byte(v))
		case b[0] == 2 && len(v) == 2:
			cport = binary.BigEndian.Uint16(v)
		case b[0] == 3 && len(v) == 2:
			o.sport = binary.BigEndian.Uint16(v)
		case b[0] == 4 && len(v) == 1:
			o.tmout = v[0]
		case b[0] == 5 && len(v) == 1:
			o.delay = v[0]
		}
		b = b[2+b[1]:]
	}
	o.group = netip.AddrPortFrom(ip, cport)
	if !ip.IsValid() || cport == 0 || o.sport == 0 {
		t.Fatalf("c%d: option 43 %s has no PXE MTFTP sub-options 1-3", i, opt43)
	}
	return o
}

// TestLabPXEMTFTPPerFileGroups is the BIOS PXE flow end to end: two
// clients, as BIOS PXE ROMs, get two different boot files from mtftpd's
// DHCP server, each with its own group and client port in option
// 43.1–43.5; then two atftp PXE MTFTP clients fetch the two files at the
// same time from the announced groups, and each gets its file's bytes.
func TestLabPXEMTFTPPerFileGroups(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	testutil.Tool(t, "atftp")
	testutil.Tool(t, "busybox")
	lab := netlab.New(t, netlab.Options{Clients: 2})
	root := t.TempDir()
	files := map[string][]byte{"a.0": make([]byte, 3<<19), "b.0": make([]byte, 1<<20)}
	for name, b := range files {
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := startServer(t, lab, fmt.Sprintf(`[tftp]
listen = "0.0.0.0:69"
root = %q
[mtftp]
pxe_listen = "192.0.2.1:1759"
[dhcp]
mode = "server"
[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.200-192.0.2.220"
[[dhcp.boot]]
name = "room-a"
arch = [0]
user_class = "room-a"
file = "a.0"
[[dhcp.boot]]
name = "room-b"
arch = [0]
user_class = "room-b"
file = "b.0"
`, root), "PXE MTFTP listening", "tftp server listening", "dhcp server listening")

	offers := []pxeOffer{askDHCPAsBIOSROM(t, lab, 1, "room-a"), askDHCPAsBIOSROM(t, lab, 2, "room-b")}
	for i, want := range []string{"a.0", "b.0"} {
		o := offers[i]
		if o.file != want || o.siaddr != netlab.ServerAddr || o.sport != 1759 || o.tmout != 2 || o.delay != 2 ||
			!DefaultPXEFileGroups.Contains(o.group.Addr()) || o.group.Addr() == DefaultPXEGroup {
			t.Fatalf("c%d offer: %+v", i+1, o)
		}
	}
	if offers[0].group == offers[1].group {
		t.Fatalf("both files announced on %v", offers[0].group)
	}

	outDir := t.TempDir()
	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i, o := range offers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
			defer cancel()
			outs[i], errs[i] = lab.Run(ctx, netlab.Client(i+1), "timeout", "60", "atftp", "--mget",
				"--mtftp", "mcast-ip "+o.group.Addr().String(), "--mtftp", fmt.Sprintf("client-port %d", o.group.Port()),
				"--mtftp", fmt.Sprintf("listen-delay %d", o.tmout), "--mtftp", fmt.Sprintf("timeout-delay %d", o.delay),
				"-r", o.file, "-l", filepath.Join(outDir, o.file), o.siaddr, fmt.Sprint(o.sport))
		})
	}
	wg.Wait()
	for i, o := range offers {
		got, err := os.ReadFile(filepath.Join(outDir, o.file))
		if err != nil || !bytes.Equal(got, files[o.file]) {
			t.Errorf("c%d %s: %d bytes, not the file (%v); atftp: %v\n%s", i+1, o.file, len(got), err, errs[i], outs[i])
		}
	}
	// The server's passes: each file on the group it was announced on.
	type pass struct {
		File, Group, Outcome string
		Duration             float64 // ms
		Time                 string
	}
	var passes []pass
	for _, line := range strings.Split(logs.String(), "\n") {
		var p pass
		var m struct{ Message string }
		if json.Unmarshal([]byte(line), &m) == nil && m.Message == "mtftp pass" && json.Unmarshal([]byte(line), &p) == nil {
			passes = append(passes, p)
		}
	}
	for _, o := range offers {
		ok := false
		for _, p := range passes {
			ok = ok || p.File == o.file && p.Group == o.group.String() && p.Outcome == "ok"
		}
		if !ok {
			t.Errorf("no pass of %s on %v in %+v", o.file, o.group, passes)
		}
	}
	t.Logf("passes: %+v", passes)
}
