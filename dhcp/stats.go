package dhcp

import (
	"sync/atomic"

	"github.com/mtftpd/mtftpd/internal/counters"
)

// Counters count the fate of every packet. All fields are updated
// atomically and may be read at any time; Snapshot gives a
// consistent-enough copy for metrics.
type Counters struct {
	Discover atomic.Uint64 // DHCPDISCOVERs received
	Request  atomic.Uint64 // DHCPREQUESTs received
	Decline  atomic.Uint64 // DHCPDECLINEs received
	Release  atomic.Uint64 // DHCPRELEASEs received
	Inform   atomic.Uint64 // DHCPINFORMs received

	Offer      atomic.Uint64 // DHCPOFFERs sent (server mode)
	Ack        atomic.Uint64 // DHCPACKs sent (server mode, INFORM answers included)
	Nak        atomic.Uint64 // DHCPNAKs sent
	ProxyOffer atomic.Uint64 // ProxyDHCP OFFERs sent (yiaddr 0)
	ProxyAck   atomic.Uint64 // ProxyDHCP ACKs sent from port 4011

	Ignored         atomic.Uint64 // valid packets deliberately left unanswered (not ours, not PXE in proxy mode, no subnet, …)
	BadPacket       atomic.Uint64 // unparsable or nonsensical packets
	NoArch          atomic.Uint64 // netboot clients whose architecture no boot rule matches: no answer
	LoopRefused     atomic.Uint64 // a rule handed an iPXE binary to iPXE: refused
	PoolExhausted   atomic.Uint64 // DISCOVERs left unanswered because the pool had no free address
	OffersReclaimed atomic.Uint64 // offers nobody REQUESTed within OfferGrace, taken back for a DISCOVER that found the pool full
	MACLimited      atomic.Uint64 // requests unanswered: MaxPerMAC clients already hold addresses under that MAC
	Oversize        atomic.Uint64 // replies that did not fit the client's maximum message size even trimmed
	MTFTPAnnounced  atomic.Uint64 // replies to BIOS PXE ROMs that announced PXE MTFTP (option 43.1–43.5)
	RelayRefused    atomic.Uint64 // relayed requests (giaddr set) whose giaddr or source is not in Relays: unanswered
	InformRefused   atomic.Uint64 // INFORMs whose ciaddr is not their source address (or with no source): unanswered

	// Per-class OFFERs (full or proxy) that carried boot information.
	ArchBIOS      atomic.Uint64 // option 93 = 0
	ArchUEFI32    atomic.Uint64 // 6
	ArchUEFI64    atomic.Uint64 // 7, 9
	ArchUEFIARM32 atomic.Uint64 // 10
	ArchUEFIARM64 atomic.Uint64 // 11
	ArchHTTP      atomic.Uint64 // UEFI HTTP Boot (option 60 HTTPClient)
	ArchIPXE      atomic.Uint64 // iPXE (docs/protocols.md §9.9), whatever its architecture
	ArchOther     atomic.Uint64 // anything a custom rule matched

	LeaseWrites      atomic.Uint64 // lease journal appends (each one fdatasync) and rewrites
	LeaseWriteErrors atomic.Uint64 // failed commits: the ACKs waiting on them were not sent
	SendErrors       atomic.Uint64 // replies the kernel refused
	SendDropped      atomic.Uint64 // replies dropped, not waited for: send buffer full (replies to addresses that never resolve fill it)
	ReadErrors       atomic.Uint64 // socket read errors other than shutdown

	// byArch counts replies sent by kind and client class (ByArch).
	byArch [numReplyKinds][numArchLabels]atomic.Uint64
}

// replyKind is the kind of a counted reply.
type replyKind int

const (
	replyOffer replyKind = iota
	replyAck
	replyNak
	replyProxyOffer
	replyProxyAck
	numReplyKinds
)

var replyNames = [numReplyKinds]string{"offer", "ack", "nak", "proxy_offer", "proxy_ack"}

// Client class labels: the archClass buckets, and "none" for a client
// that asked for no boot information (an ordinary DHCP client).
const (
	archNone      = archClass(classIPXE + 1)
	numArchLabels = int(archNone) + 1
)

var archNames = [numArchLabels]string{
	classOther: "other", classBIOS: "bios", classUEFI32: "uefi32", classUEFI64: "uefi64",
	classARM32: "uefi-arm32", classARM64: "uefi-arm64", classHTTP: "http", classIPXE: "ipxe", archNone: "none",
}

// archLabel is a client's class for the by-architecture counters.
func archLabel(c Client) archClass {
	if !c.Netboot() {
		return archNone
	}
	return classify(c)
}

// ArchCount is one cell of Counters.ByArch.
type ArchCount struct {
	Reply string // offer, ack, nak, proxy_offer, proxy_ack
	Arch  string // bios, uefi32, uefi64, uefi-arm32, uefi-arm64, http, ipxe, other, none
	Value uint64
}

// ByArch returns the replies sent by kind and client class, the cells
// that are not zero only.
func (c *Counters) ByArch() []ArchCount {
	var out []ArchCount
	for k := range c.byArch {
		for a := range c.byArch[k] {
			if v := c.byArch[k][a].Load(); v > 0 {
				out = append(out, ArchCount{replyNames[k], archNames[a], v})
			}
		}
	}
	return out
}

// archCounter is the ByArch cell of a reply to client c.
func (c *Counters) archCounter(k replyKind, cl Client) *atomic.Uint64 {
	return &c.byArch[k][archLabel(cl)]
}

// Snapshot returns every counter with its field name.
func (c *Counters) Snapshot() []counters.Value { return counters.Snapshot(c) }
