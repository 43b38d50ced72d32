package mtftp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"sync"
	"time"
)

// What the native dialect does before it trusts a receiver
// (docs/security.md, "Native multicast"): a join is answered with a
// CHALLENGE — a cookie computed from the request's source address and
// port, smaller than the request — and only a request that echoes it
// (x-cookie) gets session state and a stream. Nothing is kept per
// challenge: the cookie is an HMAC under a secret made at start, over the
// address and a 64-second epoch (the current and the previous one are
// accepted). The cookie then serves as the receiver's token in its
// STATUS, WANT and DONE packets, so nobody else can report, ask or leave
// for it.

const (
	cookieEpoch = 64 * time.Second
	// nativeMaxPerAddr caps the receivers of one address in a session: a
	// machine deploys an image once; a load test spreads its receivers
	// over addresses (bench mcast --source-addrs), as tftp's per-client
	// cap already asks.
	nativeMaxPerAddr = 16
	// nativeParityBudget bounds the parity all native sessions cache
	// together; each session also keeps at most nativeParityCache.
	nativeParityBudget = 128 << 20
)

// nativeBlockSizes are the blksizes a native session uses: a request is
// served at the largest one not above what it negotiated, so a file has
// at most three sessions per tier, and no shard is small enough to make
// per-stripe state large (500-byte shards: 32 KB stripes).
var nativeBlockSizes = []int{8972, 1468, 512} // jumbo frames, a 1500-byte MTU, RFC 1350

// nativeBlockSize picks the session blksize for a negotiated one (0: too
// small for the dialect).
func nativeBlockSize(negotiated int) int {
	for _, b := range nativeBlockSizes {
		if negotiated >= b {
			return b
		}
	}
	return 0
}

type cookieJar struct {
	once   sync.Once
	secret [32]byte
}

func (j *cookieJar) cookie(peer netip.AddrPort, epoch int64) token {
	j.once.Do(func() { rand.Read(j.secret[:]) })
	m := hmac.New(sha256.New, j.secret[:])
	a := peer.Addr().As16()
	m.Write(a[:])
	var b [10]byte
	binary.BigEndian.PutUint16(b[:], peer.Port())
	binary.BigEndian.PutUint64(b[2:], uint64(epoch))
	m.Write(b[:])
	var t token
	copy(t[:], m.Sum(nil))
	return t
}

// issue returns the cookie for peer now.
func (j *cookieJar) issue(peer netip.AddrPort, now time.Time) token {
	return j.cookie(peer, now.UnixNano()/int64(cookieEpoch))
}

// valid reports whether hexCookie is peer's cookie of this epoch or the
// last one, and returns it.
func (j *cookieJar) valid(peer netip.AddrPort, hexCookie string, now time.Time) (token, bool) {
	var t token
	if len(hexCookie) != 2*tokenLen {
		return t, false
	}
	if _, err := hex.Decode(t[:], []byte(hexCookie)); err != nil {
		return t, false
	}
	e := now.UnixNano() / int64(cookieEpoch)
	for _, epoch := range []int64{e, e - 1} {
		if want := j.cookie(peer, epoch); hmac.Equal(t[:], want[:]) {
			return t, true
		}
	}
	return t, false
}

// challenge sends a CHALLENGE to peer from a socket on local (one per
// local address, kept for the server's life: the request's own socket
// belongs to the TFTP server).
func (s *Server) challenge(peer netip.AddrPort, local netip.Addr) {
	b := appendChallenge(nil, s.cookies.issue(peer, time.Now()))
	if s.sendChallenge != nil {
		s.sendChallenge(b, peer)
		return
	}
	s.chMu.Lock()
	c := s.chConns[local]
	if c == nil {
		var ip net.IP
		if local.IsValid() && !local.IsUnspecified() {
			ip = local.AsSlice()
		}
		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
		if err != nil {
			s.chMu.Unlock()
			s.Counters.SendErrors.Add(1)
			return
		}
		if s.chConns == nil {
			s.chConns = map[netip.Addr]*net.UDPConn{}
		}
		if len(s.chConns) < 64 { // a few local addresses; never grows with requests
			s.chConns[local] = uc
		} else {
			defer uc.Close()
		}
		c = uc
	}
	s.chMu.Unlock()
	if _, err := c.WriteToUDPAddrPort(b, peer); err != nil {
		s.Counters.SendErrors.Add(1)
	}
}

// closeChallenges closes the challenge sockets (Shutdown).
func (s *Server) closeChallenges() {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	for a, c := range s.chConns {
		c.Close()
		delete(s.chConns, a)
	}
}
