package main

import (
	"strings"
	"testing"

	"github.com/mtftpd/mtftpd/bench"
)

// The DHCP storm's summary names its own CPU per exchange (a storm that
// costs as much as the server squeezes the rate it reports), and says
// nothing of it when it was not measured.
func TestPrintDHCPReportStormCPU(t *testing.T) {
	rep := bench.DHCPReport{Iface: "eth0", Clients: 3000, Concurrency: 20, Completed: 3000,
		WallSeconds: 0.4, ExchangesPerSec: 7500, ClientCPUSeconds: 0.3}
	var b strings.Builder
	printDHCPReport(&b, rep)
	if !strings.Contains(b.String(), "storm CPU 0.30 s (100 µs per exchange)") {
		t.Fatalf("no storm CPU line:\n%s", b.String())
	}
	rep.ClientCPUSeconds = 0
	b.Reset()
	printDHCPReport(&b, rep)
	if strings.Contains(b.String(), "storm CPU") {
		t.Fatalf("storm CPU printed unmeasured:\n%s", b.String())
	}
}
