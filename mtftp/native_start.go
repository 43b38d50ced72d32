package mtftp

import (
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

// When a native session starts streaming (docs/native-multicast.md,
// "Starting a session"). A receiver that joins after the first shard left
// costs the room repairs for what it missed of the group under way, and
// one more pass for the rest, so a session waits for the room first — the
// policy udp-sender's users know: start when MinReceivers have joined,
// or when nobody new has joined for Settle, and in any case after MaxWait.
const (
	// DefaultNativeSettle: a room whose machines join within a second
	// (power-on, PXE, the deploy environment starting) joins one stream —
	// the gaps between joins stay well under a second.
	DefaultNativeSettle = time.Second
	// DefaultNativeMaxWait bounds the settling: a steady trickle of
	// joiners cannot hold a stream back for long.
	DefaultNativeMaxWait = 5 * time.Second
	// DefaultNativeMaxWaitCap bounds what a receiver may ask for: the
	// first receiver's request sets a new session's policy, and a
	// student on the boot LAN must not hold a room's stream for long.
	DefaultNativeMaxWaitCap = time.Minute
	// maxMinReceivers bounds MinReceivers from anyone.
	maxMinReceivers = 10000
)

// RRQ options a receiver may use to set a new session's start policy
// (milliseconds for the durations). They apply only when the request
// creates the session, and only where no StartRule matches the file.
const (
	OptMinReceivers = "x-min-receivers"
	OptMaxWait      = "x-max-wait"
	OptSettle       = "x-settle"
)

// StartPolicy decides when a session starts streaming. With MinReceivers
// > 0 it starts as soon as that many have joined (Settle is not used);
// otherwise once no receiver has joined for Settle. MaxWait after the
// session began it starts whatever the count. A zero duration takes the
// default; a negative one means none (start at once).
type StartPolicy struct {
	MinReceivers int
	MaxWait      time.Duration
	Settle       time.Duration
}

// StartRule sets the policy of the files whose name matches Pattern
// (path.Match syntax, e.g. "images/*.img"; "*" does not cross a "/": a
// rule for every file is "*" plus "*/*" and so on).
type StartRule struct {
	Pattern string
	StartPolicy
}

// withDefaults fills zero fields from def, then the package defaults.
func (p StartPolicy) withDefaults(def StartPolicy) StartPolicy {
	if p.MaxWait == 0 {
		p.MaxWait = def.MaxWait
	}
	if p.MaxWait == 0 {
		p.MaxWait = DefaultNativeMaxWait
	}
	if p.Settle == 0 {
		p.Settle = def.Settle
	}
	if p.Settle == 0 {
		p.Settle = DefaultNativeSettle
	}
	if p.MinReceivers == 0 {
		p.MinReceivers = def.MinReceivers
	}
	return p
}

// startPolicy resolves the policy of a new session of name: the first
// matching rule, else what the request asks for (bounded), else the
// server's.
func (s *Server) startPolicy(name string, req *tftp.Request) StartPolicy {
	for _, r := range s.NativeStartRules {
		if ok, _ := path.Match(r.Pattern, name); ok {
			return r.StartPolicy.withDefaults(s.NativeStart)
		}
	}
	p := s.NativeStart.withDefaults(StartPolicy{})
	if req == nil {
		return p
	}
	limit := s.NativeMaxWaitCap
	if limit <= 0 {
		limit = DefaultNativeMaxWaitCap
	}
	// A request may ask the session to wait longer than the operator's
	// policy says, up to the cap — never shorter, and never fewer
	// receivers: whoever creates a session must not be able to start a
	// room's stream before the room is in.
	ms := func(v string, floor time.Duration) (time.Duration, bool) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, false
		}
		d := limit
		if n < limit.Milliseconds() {
			d = time.Duration(n) * time.Millisecond
		}
		return max(d, floor), true
	}
	for _, o := range req.Options {
		switch strings.ToLower(o.Name) {
		case OptMinReceivers:
			if n, err := strconv.Atoi(o.Value); err == nil && n >= 0 {
				p.MinReceivers = max(p.MinReceivers, min(n, maxMinReceivers))
			}
		case OptMaxWait:
			if d, ok := ms(o.Value, p.MaxWait); ok {
				p.MaxWait = d
			}
		case OptSettle:
			if d, ok := ms(o.Value, p.Settle); ok {
				p.Settle = d
			}
		}
	}
	return p
}

// startAt says whether a session that began at began, has receivers
// joined (the last at lastJoin), starts now; if not, when to look again
// (a join wakes the session earlier).
func (p StartPolicy) startAt(receivers int, began, lastJoin, now time.Time) (start bool, next time.Time) {
	deadline := began.Add(max(p.MaxWait, 0))
	if !now.Before(deadline) {
		return true, now
	}
	if p.MinReceivers > 0 {
		return receivers >= p.MinReceivers, deadline
	}
	settled := lastJoin.Add(max(p.Settle, 0))
	if !now.Before(settled) {
		return true, now
	}
	return false, earlier(deadline, settled)
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
