// Package status shows what the server is doing: Prometheus metrics
// (/metrics), running and recent transfers, multicast sessions and DHCP
// clients as JSON (/api/transfers), and a live status page (/status/)
// built on that JSON. It reads the other packages' counters, registries
// and lease table at request time and never writes to them: nothing here
// runs on a packet path.
package status

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/mirror"
	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/tftp"
)

// Server serves the status pages of the services it is given. TFTP is
// required; a nil MTFTP, DHCP or HTTP is a service that is not running.
type Server struct {
	TFTP  *tftp.Server
	MTFTP *mtftp.Server
	DHCP  *dhcp.Server
	DHCP6 *dhcp.Server6 // nil when [dhcp6] is off
	HTTP  *mirror.Server
	// Imaging, if set, serves /api/imaging and /api/imaging/… (the
	// reimaging tasks' admin API, imaging.Manager.AdminHandler), behind
	// the same http.api_allow as every page.
	Imaging http.Handler
	// Collectors are more metrics for /metrics (the imaging manager's).
	Collectors []prometheus.Collector

	once    sync.Once
	handler http.Handler

	mu     sync.Mutex
	cached []byte    // the last /api/transfers body
	at     time.Time // when it was made
}

// snapshotTTL is how long one /api/transfers body is reused: however many
// status pages poll, the registries are read and the body built at most
// this often (about 1.5 ms of CPU for 200 transfers: BenchmarkSnapshotJSON).
// The page polls once a second, so it never sees older data than this.
const snapshotTTL = time.Second

//go:embed assets
var assets embed.FS

// Handler serves /metrics, /api/transfers and /status/ (for
// mirror.Server.Pages).
func (s *Server) Handler() http.Handler {
	s.once.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(&collector{s: s}, collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(s.Collectors...)
		page, _ := fs.Sub(assets, "assets")
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /api/transfers", s.serveTransfers)
		if s.Imaging != nil {
			mux.Handle("/api/imaging", s.Imaging)
			mux.Handle("/api/imaging/", s.Imaging)
		}
		mux.Handle("GET /status/", http.StripPrefix("/status/", http.FileServerFS(page)))
		s.handler = mux
	})
	return s.handler
}

// DefaultRecent is how many finished transfers /api/transfers lists
// unless asked (?recent=N, up to tftp.RecentTransfers): the page shows 20.
const DefaultRecent = 20

func (s *Server) serveTransfers(w http.ResponseWriter, r *http.Request) {
	recent := DefaultRecent
	if v := r.URL.Query().Get("recent"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("recent=%q: want a number from 0 to %d", v, tftp.RecentTransfers), http.StatusBadRequest)
			return
		}
		recent = min(n, tftp.RecentTransfers)
	}
	now := time.Now()
	var b []byte
	var err error
	if recent == DefaultRecent {
		// What the pages ask for: shared, built at most once per snapshotTTL.
		s.mu.Lock()
		if s.cached == nil || now.Sub(s.at) >= snapshotTTL || now.Before(s.at) {
			if b, err = json.Marshal(s.Snapshot(now, recent)); err == nil {
				s.cached, s.at = b, now
			}
		}
		b = s.cached
		s.mu.Unlock()
	} else {
		b, err = json.Marshal(s.Snapshot(now, recent))
	}
	if err != nil {
		http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// Snapshot is the body of /api/transfers.
type Snapshot struct {
	Time      time.Time  `json:"time"`
	Clients   []Client   `json:"clients"`   // machines with a lease or a running transfer, by address
	Transfers []Transfer `json:"transfers"` // running unicast transfers, oldest first
	Recent    []Transfer `json:"recent"`    // the last finished ones, newest first
	Sessions  []Session  `json:"sessions"`  // running multicast sessions, oldest first
}

// Client is one machine: what DHCP knows of it and what it fetches now.
type Client struct {
	IP          string     `json:"ip"`
	MAC         string     `json:"mac,omitempty"`
	Hostname    string     `json:"hostname,omitempty"`
	Arch        string     `json:"arch,omitempty"` // e.g. "7 (UEFI x64)"
	LeaseExpiry *time.Time `json:"lease_expiry,omitempty"`
	Static      bool       `json:"static,omitempty"`
	Transfers   []uint64   `json:"transfers,omitempty"` // IDs of its running transfers
	Sessions    []string   `json:"sessions,omitempty"`  // groups of the multicast sessions it is in
}

// Transfer is a unicast TFTP transfer.
type Transfer struct {
	ID          uint64     `json:"id"`
	Client      string     `json:"client"` // address:port
	MAC         string     `json:"mac,omitempty"`
	Op          string     `json:"op"`
	File        string     `json:"file"`
	Size        int64      `json:"size"` // -1: not known
	Bytes       int64      `json:"bytes"`
	BlockSize   int        `json:"blksize"`
	WindowSize  int        `json:"windowsize"`
	Rate        float64    `json:"rate"` // bytes per second
	Retransmits uint64     `json:"retransmits"`
	Start       time.Time  `json:"start"`
	End         *time.Time `json:"end,omitempty"`
	Outcome     string     `json:"outcome,omitempty"`
	RTOms       float64    `json:"rto_ms,omitempty"`
}

// Session is a multicast session or PXE MTFTP pass.
type Session struct {
	Dialect   string     `json:"dialect"`
	File      string     `json:"file"`
	Group     string     `json:"group"`
	BlockSize int        `json:"blksize"`
	Size      int64      `json:"size"`
	Blocks    int        `json:"blocks"`
	Position  int        `json:"position"`
	Sent      uint64     `json:"sent"`
	Repairs   uint64     `json:"repairs"`
	Start     time.Time  `json:"start"`
	Receivers []Receiver `json:"receivers"`
}

// Receiver is a client of a multicast session.
type Receiver struct {
	Addr   string `json:"addr"`
	MAC    string `json:"mac,omitempty"`
	Master bool   `json:"master,omitempty"`
}

// Snapshot gathers the state of every service as of now, with up to
// recent finished transfers.
func (s *Server) Snapshot(now time.Time, recent int) Snapshot {
	snap := Snapshot{Time: now, Clients: []Client{}, Transfers: []Transfer{}, Recent: []Transfer{}, Sessions: []Session{}}
	clients := map[netip.Addr]*Client{}
	client := func(a netip.Addr) *Client {
		a = a.Unmap()
		c := clients[a]
		if c == nil {
			c = &Client{IP: a.String()}
			clients[a] = c
		}
		return c
	}
	if s.DHCP != nil {
		for _, l := range s.DHCP.Leases() {
			if !l.Expiry.After(now) || !l.IP.IsValid() {
				continue // expired: a hint for the next lease, not a client
			}
			c := client(l.IP)
			exp := l.Expiry
			c.MAC, c.Hostname, c.Arch, c.LeaseExpiry, c.Static = l.MAC.String(), l.Hostname, archName(l.Arch), &exp, l.Static
		}
	}
	mac := func(a netip.Addr) string {
		if c := clients[a.Unmap()]; c != nil {
			return c.MAC
		}
		return ""
	}
	running, finished := s.TFTP.Transfers()
	for _, t := range running {
		snap.Transfers = append(snap.Transfers, transfer(t, mac(t.Client.Addr()), now))
		c := client(t.Client.Addr())
		c.Transfers = append(c.Transfers, t.ID)
	}
	for _, t := range finished[:min(recent, len(finished))] {
		snap.Recent = append(snap.Recent, transfer(t, mac(t.Client.Addr()), now))
	}
	if s.MTFTP != nil {
		for _, ms := range s.MTFTP.Sessions() {
			x := Session{
				Dialect: ms.Dialect, File: ms.File, Group: ms.Group.String(), BlockSize: ms.BlockSize,
				Size: ms.Size, Blocks: ms.Blocks, Position: ms.Position, Sent: ms.Sent, Repairs: ms.Repairs,
				Start: ms.Start, Receivers: []Receiver{},
			}
			for _, r := range ms.Receivers {
				x.Receivers = append(x.Receivers, Receiver{Addr: r.Addr.String(), MAC: mac(r.Addr.Addr()), Master: r.Master})
				c := client(r.Addr.Addr())
				c.Sessions = append(c.Sessions, x.Group)
			}
			snap.Sessions = append(snap.Sessions, x)
		}
	}
	for _, c := range clients {
		snap.Clients = append(snap.Clients, *c)
	}
	sort.Slice(snap.Clients, func(i, j int) bool {
		a, _ := netip.ParseAddr(snap.Clients[i].IP)
		b, _ := netip.ParseAddr(snap.Clients[j].IP)
		return a.Less(b)
	})
	return snap
}

func transfer(t tftp.Transfer, mac string, now time.Time) Transfer {
	x := Transfer{
		ID: t.ID, Client: t.Client.String(), MAC: mac, Op: t.Op, File: t.File, Size: t.Size, Bytes: t.Bytes,
		BlockSize: t.BlockSize, WindowSize: t.WindowSize, Rate: t.Rate(now), Retransmits: t.Retransmits,
		Start: t.Start, Outcome: string(t.Outcome), RTOms: float64(t.RTO) / float64(time.Millisecond),
	}
	if !t.Running() {
		end := t.End
		x.End = &end
	}
	return x
}

// archNames names DHCP option 93 values (RFC 4578 §2.1 and the IANA
// registry; docs/protocols.md §9.2).
var archNames = map[string]string{
	"0": "BIOS", "6": "UEFI IA32", "7": "UEFI x64", "9": "UEFI x64", "10": "UEFI ARM32", "11": "UEFI ARM64",
	"15": "HTTP IA32", "16": "HTTP x64", "18": "HTTP ARM32", "19": "HTTP ARM64",
}

// archName is option 93 as the lease table has it ("7"), named for people.
func archName(a string) string {
	if n, ok := archNames[a]; ok {
		return a + " (" + n + ")"
	}
	return a
}
