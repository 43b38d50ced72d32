package mtftp

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/tftp"
)

const pxeListen = srvIP + ":1759"

// pxeClient is a PXE MTFTP client in the style of atftp's --mget and the
// EFI sample (docs/protocols.md §7.3): it listens on its group, opens a pass
// when it hears nothing, ACKs in lock-step when the server made it the
// acknowledging client (unicast DATA 1), and re-listens and re-opens
// while it has gaps.
type pxeClient struct {
	ip     string
	group  netip.AddrPort
	listen time.Duration // TMOUT: listen before opening
	delay  time.Duration // DELAY: per-packet timeout
	// openFirst: send the first RRQ at once, without listening (iPXE).
	openFirst bool
	// atftp: in RECEIVE, ACK each received block, but a block number
	// only once in a row, also on timeouts, and give up after 4 silent
	// DELAYs, as atftp 0.8.0's tftp_mtftp.c does (last_ackd_block).
	atftp bool

	got    []byte
	err    error
	opened int // RRQs sent
}

type pxeIn struct {
	from  netip.AddrPort
	b     []byte
	mcast bool
}

func (c *pxeClient) run(n *memnet.Net, server netip.AddrPort, file string) {
	uc, gc := n.Listen(c.ip), n.Join(c.ip, c.group)
	in := make(chan pxeIn, 8192)
	var readers sync.WaitGroup
	for _, rc := range []*memnet.Conn{uc, gc} {
		readers.Go(func() {
			buf := make([]byte, 2048)
			for {
				k, from, err := rc.ReadFrom(buf)
				if err != nil {
					return
				}
				in <- pxeIn{from, append([]byte(nil), buf[:k]...), rc == gc}
			}
		})
	}
	defer readers.Wait()
	defer gc.Close()
	defer uc.Close()

	blocks := map[uint16][]byte{}
	last := uint16(0) // block number of the short block, once seen
	complete := func() bool {
		if last == 0 {
			return false
		}
		for i := uint16(1); i <= last; i++ {
			if _, ok := blocks[i]; !ok {
				return false
			}
		}
		return true
	}
	// next waits up to d for a packet and keeps a DATA block from the
	// server; it returns the block number (0: none) and whether the
	// packet came to the group. An ERROR to the client's own port ends
	// the download (iPXE fails on one; the EFI client falls back to TFTP).
	next := func(d time.Duration) (nb uint16, mcast, ok bool) {
		var p pxeIn
		select {
		case p = <-in:
		case <-time.After(d):
			return 0, false, false
		}
		switch op := tftp.PacketOpcode(p.b); {
		case op == tftp.OpERROR && !p.mcast:
			c.err = fmt.Errorf("server: ERROR %q", p.b[4:])
		case op == tftp.OpDATA && len(p.b) >= 4 && p.from.Addr() == server.Addr():
			nb = uint16(p.b[2])<<8 | uint16(p.b[3])
			blocks[nb] = p.b[4:]
			if len(p.b)-4 < PXEBlockSize {
				last = nb
			}
		}
		return nb, p.mcast, true
	}
	ack := func(nb uint16, to netip.AddrPort) {
		uc.WriteTo([]byte{0, byte(tftp.OpACK), byte(nb >> 8), byte(nb)}, to)
	}
	for round := 0; round < 50 && !complete() && c.err == nil; round++ {
		// LISTEN: collect what passes by until the stream stops.
		for _, _, ok := next(c.listen); ok && !complete() && c.err == nil && !(round == 0 && c.openFirst); _, _, ok = next(c.delay) {
		}
		if complete() || c.err != nil {
			break
		}
		// OPEN.
		c.opened++
		uc.WriteTo((&tftp.Request{Op: tftp.OpRRQ, Filename: file, Mode: "octet"}).Marshal(nil), server)
		nb, mcast, ok := next(c.delay)
		if ok && nb == 1 && mcast {
			// The unicast copy may be just behind: two sockets.
			nb, mcast, ok = next(10 * time.Millisecond)
		}
		if !ok || nb != 1 || mcast {
			continue // nothing, or another client's pass: listen to it
		}
		if c.atftp {
			acked := uint16(0)
			for nb, tries := uint16(1), 0; tries <= 3 && c.err == nil; {
				if nb > 0 && nb != acked {
					ack(nb, server)
					acked = nb
				}
				if nb == last {
					break
				}
				if nb, _, ok = next(c.delay); !ok {
					tries++
				} else if nb > 0 {
					tries = 0
				}
			}
			continue
		}
		// RECEIVE: the acknowledging client ACKs every block in
		// lock-step, to the server's port, until the short one.
		cur := uint16(1)
		for tries := 0; tries < 5 && c.err == nil; {
			ack(cur, server)
			if cur == last {
				break
			}
			nb, _, ok := next(c.delay)
			if !ok {
				tries++
			} else if nb == cur+1 {
				cur, tries = nb, 0
			}
		}
	}
	if c.err == nil && !complete() {
		c.err = fmt.Errorf("incomplete after %d opens: %d blocks, last %d", c.opened, len(blocks), last)
	}
	if c.err != nil {
		return
	}
	for i := uint16(1); i <= last; i++ {
		c.got = append(c.got, blocks[i]...)
	}
}

// newPXETestServer serves files over n with a PXE listener on pxeListen;
// stop it with the returned function.
func newPXETestServer(t *testing.T, n *memnet.Net, files map[string][]byte) (*Server, func()) {
	t.Helper()
	s := newTestServer(t, n, files)
	s.PXEListen = pxeListen
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	c := n.Bind(netip.MustParseAddrPort(pxeListen))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newPXEServer(s, c).run(ctx) }()
	return s, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pxe server: %v", err)
		}
		c.Close()
	}
}

// settle lets the last ACKs reach the server and its passes end.
func settle() {
	time.Sleep(time.Second)
	synctest.Wait()
}

// fileGroup asks for a file's group as the DHCP server does.
func fileGroup(t *testing.T, s *Server, file string) netip.AddrPort {
	t.Helper()
	g, sport, ok := s.PXEFileGroup(file, netip.MustParseAddr(srvIP))
	if !ok || sport != 1759 {
		t.Fatalf("PXEFileGroup(%q) = %v, %d, %v", file, g, sport, ok)
	}
	return g
}

// TestPXETwoFilesAtOnce: two boot files announced by DHCP get two groups;
// their clients start together, both passes run at once, each client gets
// its own file's bytes, and nothing goes to iPXE's fixed group.
func TestPXETwoFilesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(11)
		a, b := testData(300_000, 1), testData(200_000, 2)
		s, stop := newPXETestServer(t, n, map[string][]byte{"a.0": a, "b.0": b})
		defer stop()
		ga, gb := fileGroup(t, s, "a.0"), fileGroup(t, s, "b.0")
		if ga == gb || ga.Addr() == DefaultPXEGroup || gb.Addr() == DefaultPXEGroup || ga.Port() == gb.Port() {
			t.Fatalf("groups %v and %v", ga, gb)
		}
		server := netip.MustParseAddrPort(pxeListen)
		ca := &pxeClient{ip: "192.0.2.101", group: ga, listen: time.Second, delay: time.Second}
		cb := &pxeClient{ip: "192.0.2.102", group: gb, listen: time.Second, delay: time.Second}
		var clients, watch sync.WaitGroup
		clients.Go(func() { ca.run(n, server, "a.0") })
		clients.Go(func() { cb.run(n, server, "/b.0") }) // firmware spelling: same file
		var peak atomic.Int64
		done := make(chan struct{})
		watch.Go(func() {
			for {
				peak.Store(max(peak.Load(), s.Counters.ActivePasses.Load()))
				select {
				case <-done:
					return
				case <-time.After(time.Millisecond):
				}
			}
		})
		clients.Wait()
		close(done)
		watch.Wait()
		settle()
		for _, c := range []struct {
			c    *pxeClient
			want []byte
		}{{ca, a}, {cb, b}} {
			if c.c.err != nil || !bytes.Equal(c.c.got, c.want) {
				t.Errorf("%s: %d bytes, err %v", c.c.ip, len(c.c.got), c.c.err)
			}
		}
		if peak.Load() != 2 || s.Counters.Passes.Load() != 2 {
			t.Errorf("passes %d, at most %d at once; want 2 and 2", s.Counters.Passes.Load(), peak.Load())
		}
		if k := n.Sent(netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort)); k != 0 {
			t.Errorf("%d datagrams to iPXE's fixed group", k)
		}
		if s.Counters.ActivePasses.Load() != 0 {
			t.Errorf("passes still running")
		}
	})
}

// TestPXEFixedGroup: a file no DHCP server announced goes on iPXE's fixed
// group; while its pass runs, a request for another file is refused with
// an ERROR (its client would take the running file's blocks for its own),
// one for the same file is not answered (the client listens), and after
// the pass the other file is served.
func TestPXEFixedGroup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(12)
		a, b := testData(400_000, 3), testData(10_000, 4)
		s, stop := newPXETestServer(t, n, map[string][]byte{"a": a, "b": b})
		defer stop()
		fixed := netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort)
		server := netip.MustParseAddrPort(pxeListen)
		ca := &pxeClient{ip: "192.0.2.101", group: fixed, listen: time.Second, delay: time.Second}
		var wg sync.WaitGroup
		wg.Go(func() { ca.run(n, server, "a") })
		for s.Counters.ActivePasses.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		// Same file, late: a listener that opens at once is ignored and
		// completes on this pass and the next.
		late := &pxeClient{ip: "192.0.2.103", group: fixed, listen: time.Second, delay: time.Second, openFirst: true}
		wg.Go(func() { late.run(n, server, "a") })
		cb := &pxeClient{ip: "192.0.2.102", group: fixed, delay: time.Second, openFirst: true}
		cb.run(n, server, "b")
		if cb.err == nil || s.Counters.PXERefused.Load() != 1 {
			t.Errorf("other file during the pass: err %v, refused %d", cb.err, s.Counters.PXERefused.Load())
		}
		wg.Wait()
		for _, c := range []*pxeClient{ca, late} {
			if c.err != nil || !bytes.Equal(c.got, a) {
				t.Errorf("%s: %d bytes, err %v", c.ip, len(c.got), c.err)
			}
		}
		if s.Counters.PXEIgnored.Load() == 0 {
			t.Error("the late request for the running file was answered")
		}
		cb = &pxeClient{ip: "192.0.2.102", group: fixed, listen: time.Second, delay: time.Second}
		cb.run(n, server, "b")
		if cb.err != nil || !bytes.Equal(cb.got, b) {
			t.Errorf("other file after the pass: %d bytes, err %v", len(cb.got), cb.err)
		}
		settle()
	})
}

// TestPXETooBig: a file of 65535 blocks is the largest PXE MTFTP can
// carry (the last block must be short: 33,553,919 bytes); from 33,553,920
// bytes on, the request gets an ERROR before any DATA (the client uses
// TFTP) and DHCP announces no group for it.
func TestPXETooBig(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(13)
		s, stop := newPXETestServer(t, n, nil)
		defer stop()
		root := s.Files.Root()
		for _, size := range []int64{PXEMaxSize, 65535 * 512, 65535*512 + 1} {
			name := fmt.Sprintf("f%d", size)
			f, err := os.Create(filepath.Join(root, name))
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(size) // sparse
			f.Close()
			_, _, announced := s.PXEFileGroup(name, netip.MustParseAddr(srvIP))
			uc := n.Listen("192.0.2.101")
			uc.WriteTo((&tftp.Request{Op: tftp.OpRRQ, Filename: name, Mode: "octet"}).Marshal(nil), netip.MustParseAddrPort(pxeListen))
			buf := make([]byte, 600)
			uc.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := uc.ReadFrom(buf)
			uc.Close()
			if err != nil {
				t.Fatalf("%d bytes: no answer: %v", size, err)
			}
			op := tftp.PacketOpcode(buf[:k])
			if fits := size <= PXEMaxSize; fits != (op == tftp.OpDATA) || fits != announced {
				t.Errorf("%d bytes: answer opcode %d, announced %v", size, op, announced)
			}
			if size > PXEMaxSize && op != tftp.OpERROR {
				t.Errorf("%d bytes: opcode %d, want ERROR", size, op)
			}
			time.Sleep(time.Minute) // the pass of the file that fits times out
			synctest.Wait()
		}
		if got := s.Counters.PXERefused.Load(); got != 2 {
			t.Errorf("refused %d, want 2", got)
		}
	})
}

// TestPXEFileMap: groups are per file, never iPXE's, stable across
// restarts, and run out cleanly.
func TestPXEFileMap(t *testing.T) {
	prefix := netip.MustParsePrefix("239.255.1.0/24")
	var m, again pxeFileMap
	m.setup(prefix, 3002, DefaultPXEGroup)
	again.setup(prefix, 3002, DefaultPXEGroup)
	seen := map[netip.Addr]string{}
	for i := range 255 {
		name := fmt.Sprintf("boot/%d.0", i)
		g, ok := m.assign(name)
		if !ok || !prefix.Contains(g.Addr()) || g.Addr() == DefaultPXEGroup || int(g.Port()) != 3002+int(g.Addr().As4()[3]) {
			t.Fatalf("%s: %v %v", name, g, ok)
		}
		if other, dup := seen[g.Addr()]; dup {
			t.Fatalf("%s and %s share %v", name, other, g)
		}
		seen[g.Addr()] = name
		if g2, _ := m.assign(name); g2 != g {
			t.Fatalf("%s moved from %v to %v", name, g, g2)
		}
		if l, ok := m.lookup(name); !ok || l != g {
			t.Fatalf("lookup %s: %v %v", name, l, ok)
		}
	}
	if g, ok := m.assign("one-too-many"); ok {
		t.Errorf("256th file got %v in a /24 with iPXE's group excluded", g)
	}
	// A new table (a restart) gives a file the same group when no other
	// name took its slot first.
	g1, _ := m.lookup("boot/7.0")
	if g2, _ := again.assign("boot/7.0"); g1 != g2 {
		t.Errorf("after a restart boot/7.0 is on %v, was %v", g2, g1)
	}
	// Client ports end at 65535: the table shrinks to fit.
	var small pxeFileMap
	small.setup(netip.MustParsePrefix("239.255.2.0/24"), 65530, DefaultPXEGroup)
	for i := range 7 {
		g, ok := small.assign(fmt.Sprint(i))
		if (i < 6) != ok || ok && g.Port() < 65530 {
			t.Errorf("slot %d of 6: %v %v", i, g, ok)
		}
	}
}

// TestPXEFileGroup: what the DHCP server is told.
func TestPXEFileGroup(t *testing.T) {
	n := memnet.New(14)
	s := newTestServer(t, n, map[string][]byte{"pxelinux.0": testData(1000, 5)})
	srv := netip.MustParseAddr(srvIP)
	if _, _, ok := s.PXEFileGroup("pxelinux.0", srv); ok {
		t.Error("announced without a PXE listener")
	}
	s.PXEListen = pxeListen
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	g, sport, ok := s.PXEFileGroup("pxelinux.0", srv)
	if !ok || sport != 1759 || !DefaultPXEFileGroups.Contains(g.Addr()) {
		t.Fatalf("pxelinux.0: %v %d %v", g, sport, ok)
	}
	// The DHCP server asks from one goroutine per socket.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if g2, _, _ := s.PXEFileGroup(`\pxelinux.0`, srv); g2 != g {
				t.Errorf(`\pxelinux.0 on %v, pxelinux.0 on %v`, g2, g)
			}
		})
	}
	wg.Wait()
	if got := s.pxeGroupOf("/pxelinux.0"); got != g {
		t.Errorf("requests for /pxelinux.0 served on %v, announced %v", got, g)
	}
	if got := s.pxeGroupOf("other"); got != netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort) {
		t.Errorf("an unannounced file is served on %v", got)
	}
	for _, bad := range []struct{ file, server string }{{"missing", srvIP}, {"../x", srvIP}, {"pxelinux.0", "192.0.2.9"}} {
		if g, _, ok := s.PXEFileGroup(bad.file, netip.MustParseAddr(bad.server)); ok {
			t.Errorf("%s at %s announced on %v", bad.file, bad.server, g)
		}
	}
	for _, tt := range []struct {
		groups, rfc2090 string
		want            string
	}{
		{"239.255.0.0/16", "239.255.0.0/24", "overlaps"},
		{"239.0.1.0/24", "239.255.0.0/24", "not inside"},
	} {
		s2 := &Server{Files: s.Files, PXEFileGroups: netip.MustParsePrefix(tt.groups), GroupRange: netip.MustParsePrefix(tt.rfc2090)}
		if err := s2.Init(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("PXEFileGroups %s: %v, want %q", tt.groups, err, tt.want)
		}
	}
}

// TestPXEAtftpLostAck: atftp 0.8.0 ACKs a block number only once, so
// when its ACK of the outstanding block is lost it ignores the repeats.
// After a timeout the server sends the block before the outstanding one
// (block 2 after block 1), which the client does ACK, then the outstanding
// one again: the pass goes on and completes; one pass in all, the file
// intact.
func TestPXEAtftpLostAck(t *testing.T) {
	for _, lost := range []uint16{1, 2, 40, 118} {
		t.Run(fmt.Sprint("ack", lost), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(24)
				dropped := false
				n.Drop = func(_, _ netip.AddrPort, b []byte) bool {
					if ack, err := tftp.ParseAck(b); err == nil && ack == lost && !dropped {
						dropped = true
						return true
					}
					return false
				}
				data := testData(60_000, 24) // 118 blocks, the last short
				s, stop := newPXETestServer(t, n, map[string][]byte{"f": data})
				defer stop()
				c := &pxeClient{ip: "192.0.2.101", group: netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort),
					listen: time.Second, delay: 2 * time.Second, atftp: true}
				c.run(n, netip.MustParseAddrPort(pxeListen), "f")
				settle()
				if !dropped || c.err != nil || !bytes.Equal(c.got, data) || c.opened != 1 || s.Counters.Passes.Load() != 1 {
					t.Errorf("dropped %v: %d bytes, err %v, %d opens, %d passes; want the file from one pass",
						dropped, len(c.got), c.err, c.opened, s.Counters.Passes.Load())
				}
			})
		})
	}
}

// TestPXEAtftpLoss: ten atftp-like clients with 5 % loss on every
// datagram all complete with the right bytes.
func TestPXEAtftpLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(25)
		n.Loss = 0.05
		data := testData(100_000, 25)
		s, stop := newPXETestServer(t, n, map[string][]byte{"f": data})
		defer stop()
		cs := make([]*pxeClient, 10)
		var wg sync.WaitGroup
		for i := range cs {
			cs[i] = &pxeClient{ip: fmt.Sprintf("192.0.2.%d", 101+i), group: netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort),
				listen: 2 * time.Second, delay: 2 * time.Second, atftp: true}
			wg.Go(func() { cs[i].run(n, netip.MustParseAddrPort(pxeListen), "f") })
		}
		wg.Wait()
		settle()
		for _, c := range cs {
			if c.err != nil || !bytes.Equal(c.got, data) {
				t.Errorf("%s: %d bytes, err %v", c.ip, len(c.got), c.err)
			}
		}
		t.Logf("passes %d, DATA sent %d, repairs %d", s.Counters.Passes.Load(), s.Counters.DataSent.Load(), s.Counters.Repairs.Load())
	})
}
