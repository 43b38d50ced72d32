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

	Ignored       atomic.Uint64 // valid packets deliberately left unanswered (not ours, not PXE in proxy mode, no subnet, …)
	BadPacket     atomic.Uint64 // unparsable or nonsensical packets
	NoArch        atomic.Uint64 // netboot clients whose architecture no boot rule matches: no answer
	LoopRefused   atomic.Uint64 // a rule handed an iPXE binary to iPXE: refused
	PoolExhausted atomic.Uint64 // DISCOVERs left unanswered because the pool had no free address
	Oversize      atomic.Uint64 // replies that did not fit the client's maximum message size even trimmed

	// Per-class OFFERs (full or proxy) that carried boot information.
	ArchBIOS      atomic.Uint64 // option 93 = 0
	ArchUEFI32    atomic.Uint64 // 6
	ArchUEFI64    atomic.Uint64 // 7, 9
	ArchUEFIARM32 atomic.Uint64 // 10
	ArchUEFIARM64 atomic.Uint64 // 11
	ArchHTTP      atomic.Uint64 // UEFI HTTP Boot (option 60 HTTPClient)
	ArchIPXE      atomic.Uint64 // iPXE (§9.9), whatever its architecture
	ArchOther     atomic.Uint64 // anything a custom rule matched

	LeaseWrites      atomic.Uint64 // lease file commits (each one fsync of file and directory)
	LeaseWriteErrors atomic.Uint64 // failed commits: the ACKs waiting on them were not sent
	SendErrors       atomic.Uint64 // replies the kernel refused
	ReadErrors       atomic.Uint64 // socket read errors other than shutdown
}

// Snapshot returns every counter with its field name.
func (c *Counters) Snapshot() []counters.Value { return counters.Snapshot(c) }
