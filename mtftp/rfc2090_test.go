package mtftp

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/tftp"
)

const srvIP = "192.0.2.1"

func testData(size int, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// newTestServer serves files from a temp root over n.
func newTestServer(t *testing.T, n *memnet.Net, files map[string][]byte) *Server {
	t.Helper()
	root := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &Server{Files: st, Log: zerolog.New(zerolog.NewTestWriter(t)),
		dial: func(netip.Addr) (conn, error) { return n.Listen(srvIP), nil }}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	return s
}

// client is an RFC 2090 client in the style of atftp and iPXE: it joins
// the group named in the OACK, ACKs (the block before its first gap) only
// while master, and ends with an ACK of the last block.
type client struct {
	ip      string
	blksize int
	mode    string
	// silentAfterOACK: the client vanishes after its first OACK (a
	// machine switched off), without a word.
	silentAfterOACK bool
	// dieAfter: the client vanishes after holding this many blocks.
	dieAfter int
	// stallAt: as master, its ACK of this block is lost; like atftp 0.8.0
	// it then ACKs no repeat of a block it holds (each repeat restarts its
	// 5 s timeout) until a new OACK mc=1 or that timeout.
	stallAt int

	got      []byte
	master   int // times it was made master
	served   bool
	err      error
	finished time.Time
}

func (c *client) run(ctx context.Context, n *memnet.Net, s *Server, file string) {
	uc := n.Listen(c.ip)
	defer uc.Close()
	mode := c.mode
	if mode == "" {
		mode = "octet"
	}
	req := &tftp.Request{Op: tftp.OpRRQ, Filename: file, Mode: mode, Options: []tftp.Option{
		{Name: "multicast"}, {Name: "blksize", Value: strconv.Itoa(c.blksize)}, {Name: "tsize", Value: "0"}}}
	req, _ = tftp.ParseRequest(req.Marshal(nil))
	servedCh := make(chan bool, 1)
	go func() { servedCh <- s.ServeMulticast(ctx, req, uc.Addr(), netip.MustParseAddr(srvIP)) }()

	type in struct {
		from netip.AddrPort
		b    []byte
	}
	pkts := make(chan in, 8192)
	reader := func(c *memnet.Conn) {
		buf := make([]byte, 70000)
		for {
			k, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			pkts <- in{from, append([]byte(nil), buf[:k]...)}
		}
	}
	go reader(uc)
	var (
		gc       *memnet.Conn
		server   netip.AddrPort
		have     []bool
		data     [][]byte
		size     int64 = -1
		blksize        = 512
		total    int
		held     int
		isMaster bool
		stalled  bool
		stallHit bool
	)
	defer func() {
		if gc != nil {
			gc.Close()
		}
	}()
	first := func() int { // first missing block
		for i := 1; i < len(have); i++ {
			if !have[i] {
				return i
			}
		}
		return len(have)
	}
	ack := func(b int) { uc.WriteTo(tftp.AppendAck(nil, uint16(b)), server) }
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	deadline := time.After(10 * time.Minute)
	for {
		select {
		case ok := <-servedCh:
			c.served = ok
			if !ok {
				return
			}
			servedCh = nil
			continue
		case <-deadline:
			c.err = fmt.Errorf("%s: no file after 10 minutes (held %d of %d)", c.ip, held, total)
			return
		case <-idle.C:
			if isMaster && server.IsValid() {
				ack(first() - 1)
			}
			idle.Reset(time.Second)
			continue
		case p := <-pkts:
			switch tftp.PacketOpcode(p.b) {
			case tftp.OpOACK:
				opts, err := tftp.ParseOACK(p.b)
				if err != nil {
					c.err = err
					return
				}
				server = p.from
				if c.silentAfterOACK {
					return
				}
				for _, o := range opts {
					switch o.Name {
					case "blksize":
						blksize, _ = strconv.Atoi(o.Value)
					case "tsize":
						size, _ = strconv.ParseInt(o.Value, 10, 64)
					case "multicast":
						f := strings.Split(o.Value, ",")
						if len(f) != 3 {
							c.err = fmt.Errorf("multicast %q", o.Value)
							return
						}
						if gc == nil {
							port, _ := strconv.Atoi(f[1])
							gc = n.Join(c.ip, netip.AddrPortFrom(netip.MustParseAddr(f[0]), uint16(port)))
							go reader(gc)
						}
						wasMaster := isMaster
						isMaster = f[2] == "1"
						if isMaster && !wasMaster {
							c.master++
						}
					}
				}
				if have == nil {
					total = int(size/int64(blksize)) + 1
					have, data = make([]bool, total+1), make([][]byte, total+1)
				}
				if isMaster {
					stalled = false
					ack(first() - 1)
				}
			case tftp.OpDATA:
				b, payload, err := tftp.ParseData(p.b)
				if err != nil || have == nil || int(b) >= len(have) || b == 0 {
					continue
				}
				repeat := have[b]
				if !have[b] {
					have[b], data[b] = true, payload
					held++
				}
				if c.dieAfter > 0 && held >= c.dieAfter {
					return
				}
				if held == total {
					c.got = bytes.Join(data[1:], nil)
					c.finished = time.Now()
					ack(total) // every client ends with an ACK of the last block
					// Stay until ServeMulticast returns: the server has
					// seen the final ACK or the session ended.
					if servedCh != nil {
						c.served = <-servedCh
					}
					return
				}
				if isMaster && c.stallAt > 0 {
					if !stallHit && first()-1 == c.stallAt {
						stallHit, stalled = true, true // this ACK is lost
					}
					if stalled && (repeat || int(b) == c.stallAt) {
						idle.Reset(5 * time.Second)
						continue
					}
					stalled = false
				}
				if isMaster {
					ack(first() - 1)
					idle.Reset(time.Second)
				}
			case tftp.OpERROR:
				_, msg, _ := tftp.ParseError(p.b)
				c.err = fmt.Errorf("%s: ERROR %s", c.ip, msg)
				return
			}
		}
	}
}

// runClients starts each client after its delay and waits for all.
func runClients(t *testing.T, n *memnet.Net, s *Server, file string, delays []time.Duration, cs []*client) {
	t.Helper()
	done := make(chan struct{}, len(cs))
	for i, c := range cs {
		go func() {
			time.Sleep(delays[i])
			c.run(context.Background(), n, s, file)
			done <- struct{}{}
		}()
	}
	for range cs {
		<-done
	}
	synctest.Wait()
}

func checkGot(t *testing.T, c *client, want []byte) {
	t.Helper()
	if c.err != nil {
		t.Errorf("%s: %v", c.ip, c.err)
	}
	if !c.served {
		t.Errorf("%s: not served by multicast", c.ip)
	}
	if !bytes.Equal(c.got, want) {
		t.Errorf("%s: got %d bytes, want %d identical bytes", c.ip, len(c.got), len(want))
	}
}

func checkIdle(t *testing.T, s *Server) {
	t.Helper()
	if a := s.Counters.Active.Load(); a != 0 {
		t.Errorf("%d sessions still active", a)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) != 0 || len(s.groups) != 0 {
		t.Errorf("sessions %d, groups %d left behind", len(s.sessions), len(s.groups))
	}
}

// TestTwoClientsOneStream: two clients at once get identical bytes from one
// stream; the first is master, the second never needs a promotion repair.
func TestTwoClientsOneStream(t *testing.T) {
	for _, size := range []int{0, 1, 1428, 100_003} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(1)
				data := testData(size, 1)
				s := newTestServer(t, n, map[string][]byte{"f": data})
				cs := []*client{{ip: "192.0.2.101", blksize: 1428}, {ip: "192.0.2.102", blksize: 1428}}
				runClients(t, n, s, "f", []time.Duration{0, 0}, cs)
				for _, c := range cs {
					checkGot(t, c, data)
				}
				blocks := uint64(size/1428 + 1)
				if got := s.Counters.DataSent.Load(); got != blocks {
					t.Errorf("DATA sent %d, want %d (one stream)", got, blocks)
				}
				if m := cs[0].master + cs[1].master; m < 1 || m > 2 {
					t.Errorf("clients were master %d times, want 1 or 2", m)
				}
				checkIdle(t, s)
			})
		})
	}
}

// TestLateJoinerGetsGapsAfterPromotion: a client that joins mid-stream
// takes the rest passively and, promoted when the master is done, asks for
// exactly the blocks it missed.
func TestLateJoinerGetsGapsAfterPromotion(t *testing.T) {
	for _, loss := range []float64{0, 0.05} {
		t.Run(fmt.Sprint("loss", loss), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(2)
				n.Loss = loss
				data := testData(300_000, 2)
				s := newTestServer(t, n, map[string][]byte{"f": data})
				cs := []*client{{ip: "192.0.2.101", blksize: 1428}, {ip: "192.0.2.102", blksize: 1428}, {ip: "192.0.2.103", blksize: 1468}}
				// 1 ms each way: a block per ~2 ms; the late ones miss ~50 and ~100.
				runClients(t, n, s, "f", []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}, cs)
				for _, c := range cs {
					checkGot(t, c, data)
				}
				for _, c := range cs[1:] {
					if c.master < 1 {
						t.Errorf("%s never promoted", c.ip)
					}
				}
				blocks := uint64(len(data)/1428 + 1)
				sent, rep := s.Counters.DataSent.Load(), s.Counters.Repairs.Load()
				t.Logf("blocks %d, DATA sent %d, repairs %d, promotions %d", blocks, sent, rep, s.Counters.Promotions.Load())
				if rep == 0 {
					t.Error("late joiners needed no repairs?")
				}
				if loss == 0 && sent > blocks+blocks/2 {
					t.Errorf("DATA sent %d for %d blocks: more than the late joiners' gaps", sent, blocks)
				}
				if s.Counters.Sessions.Load() != 1 {
					t.Errorf("%d sessions, want 1 (1468 joins the 1428 session)", s.Counters.Sessions.Load())
				}
				checkIdle(t, s)
			})
		})
	}
}

// TestSilentPromoteeSkipped: a client that vanishes is skipped when its
// promotion goes unanswered; the next one completes the session.
func TestSilentPromoteeSkipped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(3)
		data := testData(50_000, 3)
		s := newTestServer(t, n, map[string][]byte{"f": data})
		cs := []*client{{ip: "192.0.2.101", blksize: 1428}, {ip: "192.0.2.102", blksize: 1428, silentAfterOACK: true},
			{ip: "192.0.2.103", blksize: 1428}}
		runClients(t, n, s, "f", []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond}, cs)
		checkGot(t, cs[0], data)
		checkGot(t, cs[2], data)
		if d := s.Counters.Dropped.Load(); d != 1 {
			t.Errorf("dropped %d, want 1 (the silent promotee)", d)
		}
		checkIdle(t, s)
	})
}

// TestMasterDiesMidStream: the master vanishes mid-transfer; after its
// retries it is dropped and the next client finishes the file.
func TestMasterDiesMidStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(4)
		data := testData(200_000, 4)
		s := newTestServer(t, n, map[string][]byte{"f": data})
		cs := []*client{{ip: "192.0.2.101", blksize: 1428, dieAfter: 40}, {ip: "192.0.2.102", blksize: 1428}}
		runClients(t, n, s, "f", []time.Duration{0, 5 * time.Millisecond}, cs)
		checkGot(t, cs[1], data)
		if cs[1].master != 1 || s.Counters.Dropped.Load() != 1 {
			t.Errorf("second client master %d times, dropped %d; want 1, 1", cs[1].master, s.Counters.Dropped.Load())
		}
		checkIdle(t, s)
	})
}

// TestMasterStalledByLostAck: the master's ACK is lost and, like atftp,
// it ignores the repeated block; the server's OACK mc=1 with the repeat
// makes it ACK again before the server would drop it.
func TestMasterStalledByLostAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(4)
		data := testData(100_000, 7)
		s := newTestServer(t, n, map[string][]byte{"f": data})
		cs := []*client{{ip: "192.0.2.101", blksize: 1428, stallAt: 20}}
		runClients(t, n, s, "f", []time.Duration{0}, cs)
		checkGot(t, cs[0], data)
		if d := s.Counters.Dropped.Load(); d != 0 {
			t.Errorf("dropped %d, want 0", d)
		}
		checkIdle(t, s)
	})
}

// TestFallbacks: requests that multicast cannot serve are handed back
// for unicast before anything is sent.
func TestFallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(5)
		big := make([]byte, 65535*8) // 65536 blocks at blksize 8
		s := newTestServer(t, n, map[string][]byte{"f": testData(100_000, 5), "g": testData(1000, 6), "big": big})
		s.GroupRange = netip.MustParsePrefix("239.255.9.9/32")
		ctx := context.Background()
		ask := func(file, mode, blksize, ip string) bool {
			req := &tftp.Request{Op: tftp.OpRRQ, Filename: file, Mode: mode, Options: []tftp.Option{{Name: "multicast"}, {Name: "blksize", Value: blksize}}}
			return s.ServeMulticast(ctx, req, netip.MustParseAddrPort(ip+":1000"), netip.MustParseAddr(srvIP))
		}
		if ask("g", "netascii", "1428", "192.0.2.50") {
			t.Error("netascii served by multicast")
		}
		if ask("big", "octet", "8", "192.0.2.50") {
			t.Error("65536 blocks served by multicast")
		}
		if ask("missing", "octet", "1428", "192.0.2.50") {
			t.Error("missing file served by multicast")
		}
		// A session holds the only group: a client of it must not be
		// refused, one of another file must (no free group), and one with
		// a smaller blksize must go unicast.
		c := &client{ip: "192.0.2.101", blksize: 1428, dieAfter: 1}
		go c.run(ctx, n, s, "f")
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if ask("g", "octet", "1428", "192.0.2.51") {
			t.Error("second file served with no free group")
		}
		if ask("f", "octet", "512", "192.0.2.52") {
			t.Error("smaller blksize joined a bigger-block session")
		}
		if got := s.Counters.Fallbacks.Load(); got != 4 {
			t.Errorf("fallbacks %d, want 4", got)
		}
		time.Sleep(time.Minute) // the dead master is dropped, the session ends
		synctest.Wait()
		checkIdle(t, s)
	})
}

// TestValidate: group ranges outside 239.255.0.0/16 are refused.
func TestValidate(t *testing.T) {
	st, _ := filestore.Open(t.TempDir())
	defer st.Close()
	for _, p := range []string{"239.0.0.0/8", "224.0.0.0/24", "239.254.0.0/24", "10.0.0.0/24"} {
		s := &Server{Files: st, GroupRange: netip.MustParsePrefix(p)}
		if err := s.Init(); err == nil {
			t.Errorf("GroupRange %s accepted", p)
		}
	}
	s := &Server{Files: st, PXEGroup: netip.MustParseAddr("224.0.1.1")}
	if err := s.Init(); err == nil {
		t.Error("PXEGroup 224.0.1.1 accepted")
	}
	s = &Server{Files: st}
	if err := s.Init(); err != nil || s.GroupRange != DefaultGroupRange || s.Port != DefaultPort || s.TTL != 1 {
		t.Errorf("defaults: %v %s %d %d", err, s.GroupRange, s.Port, s.TTL)
	}
}

// TestSpoofedAckOfLastBlock (issue 13, finding 6): the session's address
// and the members' addresses are visible on the LAN; an "ACK of the last
// block" forged from each member's address, sent before that block ever
// went out, must neither remove a member nor end the session: an ACK
// counts only for a block that was sent.
func TestSpoofedAckOfLastBlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(1)
		data := testData(100_003, 2)
		s := newTestServer(t, n, map[string][]byte{"f": data})
		last := uint16(100_003/1428 + 1)
		var members []netip.AddrPort
		forged := false
		n.Drop = func(from, to netip.AddrPort, b []byte) bool {
			switch tftp.PacketOpcode(b) {
			case tftp.OpOACK:
				if !slicesContains(members, to) {
					members = append(members, to)
				}
			case tftp.OpDATA:
				if blk, _, _ := tftp.ParseData(b); blk == 3 && !forged && len(members) == 2 {
					forged = true
					for _, m := range members {
						go n.Spoof(m, from, tftp.AppendAck(nil, last))
					}
				}
			}
			return false
		}
		cs := []*client{{ip: "192.0.2.101", blksize: 1428}, {ip: "192.0.2.102", blksize: 1428}}
		runClients(t, n, s, "f", []time.Duration{0, 0}, cs)
		if !forged {
			t.Fatal("the test never forged its ACKs")
		}
		for _, c := range cs {
			checkGot(t, c, data)
		}
		checkIdle(t, s)
	})
}

func slicesContains(s []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}
