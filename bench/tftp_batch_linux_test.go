package bench

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/internal/udpio"
	"github.com/mtftpd/mtftpd/tftp"
)

// batchSwarm is a batch-engine swarm of n clients for file f on target.
func batchSwarm(target string, n int, prof Profile, sum []byte, size int64) *TFTPSwarm {
	return &TFTPSwarm{Target: target, File: "f", Clients: n, Profile: prof, SHA256: sum, Size: size,
		Engine: EngineBatch, Live: &TFTPLive{}, MaxTime: time.Minute}
}

// wantAllDone fails unless every one of n downloads completed with size
// bytes, verified, and Live agrees with the report.
func wantAllDone(t *testing.T, rep TFTPReport, live *TFTPLive, n int, size int64, negotiated string) {
	t.Helper()
	if rep.Completed != n || rep.Failed != 0 || rep.Transfers != n || rep.Cancelled != 0 || rep.Stopped != "" {
		t.Fatalf("completed %d, failed %d (%v %q), transfers %d, cancelled %d, stopped %q; want %d",
			rep.Completed, rep.Failed, rep.Errors, rep.ErrorSamples, rep.Transfers, rep.Cancelled, rep.Stopped, n)
	}
	if rep.Bytes != int64(n)*size || rep.FileSize != size || rep.Engine != EngineBatch {
		t.Fatalf("bytes %d, file size %d, engine %q; want %d × %d, batch", rep.Bytes, rep.FileSize, rep.Engine, n, size)
	}
	if negotiated != "" && rep.Negotiated[negotiated] != n {
		t.Fatalf("negotiated %v, want %d × %s", rep.Negotiated, n, negotiated)
	}
	if rep.TransferMs.P50 <= 0 || rep.TransferMBps.P50 <= 0 {
		t.Fatalf("distributions: %+v %+v", rep.TransferMs, rep.TransferMBps)
	}
	if live.Bytes.Load() != rep.Bytes || live.Completed.Load() != int64(n) || live.Active.Load() != 0 {
		t.Fatalf("live: %d bytes, %d completed, %d active", live.Bytes.Load(), live.Completed.Load(), live.Active.Load())
	}
}

// TestBatchSwarmMtftpd: 200 batch clients (one socket, 200 loopback
// addresses) download a verified file from mtftpd, per-session and
// single-port, at blksize 1468 and 512.
func TestBatchSwarmMtftpd(t *testing.T) {
	root := t.TempDir()
	const size = 100_001 // not a multiple of either block size
	sum := writeFile(t, root, "f", size)
	for _, single := range []bool{false, true} {
		srv := startLoopServer(t, root, func(s *tftp.Server) {
			s.SinglePort = single
			// 200 clients of one /24 ask at once (docs/design.md,
			// Single-port mode): room for all.
			s.MaxUnconfirmed, s.MaxUnconfirmedPerPrefix = 1024, 1024
		})
		for _, blk := range []int{1468, 512} {
			t.Run(fmt.Sprintf("single-port=%v/blksize=%d", single, blk), func(t *testing.T) {
				s := batchSwarm(srv.addr, 200, Profile{Name: "custom", BlockSize: blk}, sum, size)
				rep, err := s.Run(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				wantAllDone(t, rep, s.Live, 200, size, fmt.Sprintf("%d/1", blk))
				t.Logf("%.1f MB/s, %d timeouts, %d duplicates, p99 %.0f ms", rep.AggregateMBps, rep.Timeouts, rep.Duplicates, rep.TransferMs.P99)
				if rep.SourceAddrs != 200 {
					t.Fatalf("%d source addresses, want the loopback spread of 200", rep.SourceAddrs)
				}
			})
		}
	}
}

// TestBatchSwarmRepeat: clients download again and again (Transfers, then
// Duration with a ramp), each download from the same (address, port).
func TestBatchSwarmRepeat(t *testing.T) {
	root := t.TempDir()
	const size = 30_000
	sum := writeFile(t, root, "f", size)
	srv := startLoopServer(t, root)
	s := batchSwarm(srv.addr, 20, Profiles["ipxe"], sum, size)
	s.Transfers = 5
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantAllDone(t, rep, s.Live, 100, size, "1432/1")
	// A download from the (address, port) of a session the server still
	// holds is taken for a repeated request (and waits out its timer):
	// the next download comes from another pair. The first RTO is 1 s, so
	// the clients' own repeats are not counted here.
	if n := srv.Counters.DupRequest.Load(); n != 0 {
		t.Fatalf("the server saw %d requests from the pair of a running session", n)
	}

	s = batchSwarm(srv.addr, 5, Profiles["bios"], sum, size)
	s.Duration, s.Ramp = 400*time.Millisecond, 100*time.Millisecond
	rep, err = s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Completed+rep.Cancelled != rep.Transfers || rep.Completed <= 5 || rep.Stopped != "" {
		t.Fatalf("transfers %d = completed %d + failed %d + cancelled %d (%v), stopped %q; want repeats, no failure",
			rep.Transfers, rep.Completed, rep.Failed, rep.Cancelled, rep.Errors, rep.Stopped)
	}
}

// TestBatchSwarmErrors: a refusal by the server and silence are reported
// with their kinds, as the goroutine engine reports them.
func TestBatchSwarmErrors(t *testing.T) {
	root := t.TempDir()
	sum := writeFile(t, root, "f", 10_000)
	srv := startLoopServer(t, root)
	mute := listenLoop(t)
	go drain(mute)
	for _, c := range []struct {
		name, target, file, kind string
	}{
		{"not found", srv.addr, "missing", "remote_1"},
		{"no answer", mute.LocalAddr().String(), "f", ErrKindTimeout},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := batchSwarm(c.target, 10, Profiles["bios"], sum, 0)
			s.File, s.Timeout, s.Retries = c.file, 20*time.Millisecond, 2
			rep, err := s.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Failed != 10 || rep.Completed != 0 || rep.Errors[c.kind] != 10 || len(rep.Errors) != 1 || len(rep.ErrorSamples) == 0 {
				t.Fatalf("failed %d, completed %d, errors %v %q; want 10 × %s", rep.Failed, rep.Completed, rep.Errors, rep.ErrorSamples, c.kind)
			}
			if c.kind == ErrKindTimeout && rep.Timeouts != 10*3 {
				t.Fatalf("%d timeouts, want 10 clients × (2 retries + 1)", rep.Timeouts)
			}
		})
	}
}

// loseServer is a minimal RFC 1350 server for the batch engine's edge
// cases: it ignores every option (512-byte blocks), sends each block once
// per ACK (no timer of its own: only the client's recovers a loss), from a
// new port per transfer; with stranger set, before each block after the
// first it also sends a forged one of the same number, garbage, from
// another port of the same address.
type loseServer struct {
	pc       *net.UDPConn
	data     []byte
	stranger *net.UDPConn
	tidErrs  atomic.Int64 // ERROR 5 (unknown TID) the stranger received
	// With resend set, the server does keep a timer: a block not ACKed
	// within resend is sent again; and it loses every ackLoss-th ACK.
	resend  time.Duration
	ackLoss int64
	acks    atomic.Int64
}

func listenLoop(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// drain reads and drops until pc closes.
func drain(pc *net.UDPConn) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			return
		}
	}
}

func startLoseServer(t *testing.T, data []byte, stranger bool, opts ...func(*loseServer)) *loseServer {
	f := &loseServer{pc: listenLoop(t), data: data}
	for _, o := range opts {
		o(f)
	}
	if stranger {
		f.stranger = listenLoop(t)
		go func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := f.stranger.ReadFrom(buf)
				if err != nil {
					return
				}
				if code, _, err := tftp.ParseError(buf[:n]); err == nil && code == tftp.ErrCodeUnknownTID {
					f.tidErrs.Add(1)
				}
			}
		}()
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := f.pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := tftp.ParseRequest(buf[:n]); err == nil {
				tid := listenLoop(t)
				go f.session(tid, from)
			}
		}
	}()
	return f
}

// session sends the file to client, lock-step, for as long as it ACKs
// (bounded: 2 s of silence ends it).
func (f *loseServer) session(tid *net.UDPConn, client netip.AddrPort) {
	defer tid.Close()
	blocks := len(f.data)/512 + 1
	sent := 0
	send := func(blk int) {
		payload := f.data[min((blk-1)*512, len(f.data)):min(blk*512, len(f.data))]
		if f.stranger != nil && blk > 1 {
			forged := append([]byte{0, byte(tftp.OpDATA), byte(blk >> 8), byte(blk)}, bytes.Repeat([]byte{0xee}, len(payload))...)
			f.stranger.WriteToUDPAddrPort(forged, client)
		}
		pkt := append([]byte{0, byte(tftp.OpDATA), byte(blk >> 8), byte(blk)}, payload...)
		tid.WriteToUDPAddrPort(pkt, client)
		sent = blk
	}
	send(1)
	buf := make([]byte, 1500)
	for silent := time.Duration(0); silent < 2*time.Second; {
		wait := cmp.Or(f.resend, 2*time.Second)
		tid.SetReadDeadline(time.Now().Add(wait))
		n, from, err := tid.ReadFromUDPAddrPort(buf)
		if err != nil {
			silent += wait
			send(sent)
			continue
		}
		silent = 0
		if from != client || f.ackLoss > 0 && f.acks.Add(1)%f.ackLoss == 0 {
			continue
		}
		ack, err := tftp.ParseAck(buf[:n])
		switch {
		case err != nil:
			return
		case int(ack) == sent && sent == blocks:
			return // the final ACK
		case int(ack) == sent:
			send(sent + 1)
		case int(ack) == sent-1:
			send(sent) // our block was lost: again
		}
	}
}

// TestBatchSwarmLoss: the batch engine drops a datagram in 7 it receives
// (OACK, DATA alike) from a server that never retransmits by itself: only
// the engine's timer (a repeated ACK or request) recovers, and every
// download completes with its exact bytes.
func TestBatchSwarmLoss(t *testing.T) {
	data := make([]byte, 20*512+100)
	rand.NewChaCha8([32]byte{7}).Read(data)
	sum := sha256.Sum256(data)
	f := startLoseServer(t, data, false)
	var n atomic.Int64
	s := batchSwarm(f.pc.LocalAddr().String(), 20, Profiles["bios"], sum[:], int64(len(data)))
	s.Timeout = 30 * time.Millisecond
	batchDrop = func(int, []byte) bool { return n.Add(1)%7 == 0 }
	t.Cleanup(func() { batchDrop = nil })
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The server ignores options: 512-byte blocks, lock-step.
	wantAllDone(t, rep, s.Live, 20, int64(len(data)), "512/1")
	if rep.Timeouts == 0 {
		t.Fatal("no timeouts: nothing was lost")
	}
}

// TestBatchSwarmServerTimer: the server loses an ACK in 5 and sends the
// block again on its own timer (3 ms, under the client's floor of 20 ms);
// the engine ACKs a repeated block again at once (once per block), so
// clients seldom wait for their own timer.
func TestBatchSwarmServerTimer(t *testing.T) {
	data := make([]byte, 20*512+100)
	rand.NewChaCha8([32]byte{9}).Read(data)
	sum := sha256.Sum256(data)
	f := startLoseServer(t, data, false, func(f *loseServer) { f.resend, f.ackLoss = 3*time.Millisecond, 5 })
	s := batchSwarm(f.pc.LocalAddr().String(), 20, Profiles["bios"], sum[:], int64(len(data)))
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantAllDone(t, rep, s.Live, 20, int64(len(data)), "512/1")
	// A lost re-ACK leaves the client to its timer (once per block, as
	// tftp.Client), so some timeouts remain; without the re-ACK there is
	// one per ACK lost.
	if lost := f.acks.Load() / 5; rep.Duplicates == 0 || int64(rep.Timeouts) > lost/2 {
		t.Fatalf("%d duplicates, %d client timeouts for %d ACKs lost; want the server's resends answered at once", rep.Duplicates, rep.Timeouts, lost)
	}
}

// TestBatchSwarmTID: datagrams from another port of the server's address
// than the transfer's (RFC 1350 §4: a TID) are not the transfer's: the
// forged blocks are answered with ERROR 5 and every download verifies.
func TestBatchSwarmTID(t *testing.T) {
	data := make([]byte, 10*512+1)
	rand.NewChaCha8([32]byte{5}).Read(data)
	sum := sha256.Sum256(data)
	f := startLoseServer(t, data, true)
	s := batchSwarm(f.pc.LocalAddr().String(), 10, Profiles["bios"], sum[:], int64(len(data)))
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantAllDone(t, rep, s.Live, 10, int64(len(data)), "512/1")
	for deadline := time.Now().Add(5 * time.Second); f.tidErrs.Load() < 10*10 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := f.tidErrs.Load(); got < 10*10 {
		t.Fatalf("the stranger got %d ERROR 5, want one per forged block (100)", got)
	}
}

// TestBatchSwarmHPA: 50 batch clients download from tftpd-hpa's in.tftpd
// (a forking C server) on loopback. Root only (in.tftpd chroots and drops
// to nobody); as root, a missing in.tftpd fails the test.
func TestBatchSwarmHPA(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("in.tftpd --secure --user nobody needs root")
	}
	hpa := findHPA()
	if hpa == "" {
		t.Fatalf("tftpd-hpa's in.tftpd not found at %s: scripts/test-deps.sh unpacks it", strings.Join(hpaBinaries, " or "))
	}
	// A world-readable root: in.tftpd drops to user nobody.
	root, err := os.MkdirTemp("", "mtftpd-bench-hpa-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	const size = 200_003
	sum := writeFile(t, root, "f", size)
	os.Chmod(filepath.Join(root, "f"), 0o644)
	free := listenLoop(t) // a free port for in.tftpd
	addr := free.LocalAddr().String()
	free.Close()
	logs := &testutil.SyncBuffer{}
	cmd := exec.Command(hpa, "--foreground", "--listen", "--user", "nobody", "--address", addr, "--secure", root)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("in.tftpd log:\n%s", logs)
		}
	})
	for try := 0; ; try++ { // bounded: in.tftpd answers within 5 s
		s := &TFTPSwarm{Target: addr, File: "f", Clients: 1, Profile: Profiles["bios"], Timeout: 50 * time.Millisecond, Retries: 1}
		if rep, err := s.Run(context.Background()); err == nil && rep.Completed == 1 {
			break
		}
		if try == 50 {
			t.Fatalf("in.tftpd does not answer at %s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s := batchSwarm(addr, 50, Profiles["bios"], sum, size)
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantAllDone(t, rep, s.Live, 50, size, "1468/1")
}

// TestBatchSwarmConfig: what the batch engine cannot play is refused by
// name before anything runs.
func TestBatchSwarmConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		s    TFTPSwarm
		want string
	}{
		{"window", TFTPSwarm{Profile: Profile{Name: "custom", BlockSize: 1468, WindowSize: 4}}, "lock-step clients only"},
		{"probe", TFTPSwarm{Profile: Profiles["uefi"]}, "tsize probe"},
		{"ipv6", TFTPSwarm{Target: "[::1]:69"}, "IPv4 only"},
		{"addresses", TFTPSwarm{Target: "192.0.2.1:69", Clients: 40, SourceAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}}, "40 clients need at least 5 source addresses, have 2 (--source-addrs)"},
		{"no addresses", TFTPSwarm{Target: "192.0.2.1:69", Clients: 17}, "17 clients need at least 3 source addresses, have 0 (--source-addrs)"},
		{"engine", TFTPSwarm{Engine: "threads"}, `Engine: "threads", want goroutine or batch`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			s.Target = cmp.Or(s.Target, "127.0.0.1:69")
			s.File, s.Clients = "f", max(s.Clients, 1)
			if s.Profile.Name == "" {
				s.Profile = Profiles["bios"]
			}
			if s.Engine == "" {
				s.Engine = EngineBatch
			}
			_, err := s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
	// Twice the addresses per socket as clients, at most 16 sockets;
	// below 2 addresses a socket per client.
	for _, c := range [][3]int{{16, 2, 16}, {17, 2, 0}, {600, 600, 3}, {200, 90, 5}, {500, 90, 12}, {16, 0, 16}, {3, 1, 3}} {
		if got := batchSockets(c[0], c[1]); got != c[2] {
			t.Fatalf("batchSockets(%d clients, %d addresses) = %d, want %d", c[0], c[1], got, c[2])
		}
	}
}

// TestBatchLoopAllocs: the per-datagram step (a DATA block in order:
// hash, count, queue the ACK) allocates nothing.
func TestBatchLoopAllocs(t *testing.T) {
	sum := sha256.Sum256(nil)
	c := TFTPSwarm{Target: "127.0.0.1:69", File: "f", Clients: 1, Profile: Profiles["bios"], SHA256: sum[:], Transfers: 1}
	r := &swarmRun{c: c, live: &TFTPLive{}, seenErrs: errorSamples{}}
	target := netip.MustParseAddrPort("127.0.0.1:69")
	l := newBatchLoop(context.Background(), r, nil, target, nil, 0, 1)
	l.begin(0, time.Now())
	l.flush()
	cl := &l.clients[0]
	peer := netip.MustParseAddrPort("127.0.0.1:40000")
	cl.peer, cl.phase, cl.blksize = peer, phaseData, 1468
	pkt := make([]byte, tftp.HeaderLen+1468)
	pkt[1] = byte(tftp.OpDATA)
	now := time.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		w := wireBlock(cl.have+1, 0)
		pkt[2], pkt[3] = byte(w>>8), byte(w)
		l.packet(udpio.Packet{Data: pkt, Src: peer}, now)
		l.flush()
	})
	if allocs != 0 || cl.have < 1000 {
		t.Fatalf("%.1f allocations per block (%d blocks in order)", allocs, cl.have)
	}
}

// TestBatchSwarmCLI: `bench tftp --engine batch` runs the batch engine,
// says so, and records it in the JSON report; a profile it cannot play
// is refused with the reason.
func TestBatchSwarmCLI(t *testing.T) {
	bin := testutil.Binary(t)
	root := t.TempDir()
	writeFile(t, root, "f", 100_000)
	srv := startLoopServer(t, root)
	report := filepath.Join(t.TempDir(), "batch.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "bench", "tftp", "--target", srv.addr, "--file", "f", "--clients", "20",
		"--profile", "bios", "--engine", "batch", "--verify-file", filepath.Join(root, "f"), "--json", report, "-q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "engine batch") || !strings.Contains(string(out), "20/20 downloads completed, verified") {
		t.Fatalf("bench tftp --engine batch: %v\n%s", err, out)
	}
	if rep := readReport(t, report); rep.Engine != EngineBatch || rep.Completed != 20 {
		t.Fatalf("%s: engine %q, completed %d", report, rep.Engine, rep.Completed)
	}
	out, err = exec.CommandContext(ctx, bin, "bench", "tftp", "--target", srv.addr, "--file", "f", "--clients", "2",
		"--profile", "uefi", "--engine", "batch", "-q").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lock-step clients only") {
		t.Fatalf("bench tftp --engine batch --profile uefi: %v\n%s", err, out)
	}
}

// FuzzBatchPacket: whatever a host that forges the target's address sends
// to a client of the batch engine — from the server's port of the
// transfer or another — the engine neither panics nor counts more bytes
// than one block per datagram, and what it queues in answer is small (an
// ACK or an ERROR).
func FuzzBatchPacket(f *testing.F) {
	data := func(block uint16, n int) []byte {
		return append([]byte{0, byte(tftp.OpDATA), byte(block >> 8), byte(block)}, make([]byte, n)...)
	}
	f.Add(data(1, 1468), true)
	f.Add(data(1, 9000), true)
	f.Add(data(1, 10), false)
	f.Add(data(0, 0), true)
	f.Add([]byte{0, byte(tftp.OpOACK), 'b', 'l', 'k', 's', 'i', 'z', 'e', 0, '8', 0}, true)
	f.Add([]byte{0, byte(tftp.OpERROR), 0, 1, 'x', 0}, true)
	f.Add([]byte{0, byte(tftp.OpOACK)}, true)
	f.Fuzz(func(t *testing.T, pkt []byte, samePort bool) {
		c := TFTPSwarm{Target: "127.0.0.1:69", File: "f", Clients: 1, Profile: Profiles["bios"], Transfers: 1}
		r := &swarmRun{c: c, live: &TFTPLive{}, seenErrs: errorSamples{}, rep: TFTPReport{Errors: map[string]int{}, Negotiated: map[string]int{}}}
		target := netip.MustParseAddrPort("127.0.0.1:69")
		l := newBatchLoop(context.Background(), r, nil, target, nil, 0, 1)
		now := time.Now()
		l.begin(0, now)
		l.flush()
		src := netip.MustParseAddrPort("127.0.0.1:40000")
		for i := range 3 { // the first reply picks the peer; then the same and another port
			from := src
			if i == 2 && !samePort {
				from = netip.MustParseAddrPort("127.0.0.1:40001")
			}
			l.packet(udpio.Packet{Data: pkt, Src: from}, now)
			for _, m := range l.out {
				if len(m.Hdr)+len(m.Payload) > 600 {
					t.Fatalf("answered %d bytes to a %d-byte datagram", len(m.Hdr)+len(m.Payload), len(pkt))
				}
			}
			l.flush()
		}
		// Three datagrams: at most three blocks of the profile's size.
		if got := l.liveBytes; got > 3*int64(c.Profile.BlockSize) { // flush adds none without a socket
			t.Fatalf("%d bytes counted from 3 datagrams of %d bytes", got, len(pkt))
		}
	})
}
