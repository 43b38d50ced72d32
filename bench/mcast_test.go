package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/tftp"
)

// TestMCastConfig: every bad field is named at once; ports default per
// dialect.
func TestMCastConfig(t *testing.T) {
	_, err := (&MCastSwarm{Dialect: "udpcast", Receivers: MaxMCastReceivers + 1, SHA256: []byte{1}}).config()
	for _, want := range []string{"Target", "File", "Receivers", "Dialect", "Dir", "SHA256"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	for _, c := range []struct{ dialect, target, want string }{
		{"native", "192.0.2.1", "192.0.2.1:69"},
		{"rfc2090", "192.0.2.1:6969", "192.0.2.1:6969"},
		{"pxe", "192.0.2.1", "192.0.2.1:1759"},
	} {
		got, err := (&MCastSwarm{Target: c.target, File: "f", Receivers: 1, Dialect: c.dialect, Dir: "d"}).config()
		if err != nil || got.Target != c.want || got.MaxTime != DefaultMCastMaxTime {
			t.Errorf("%s %s: %q %v %v", c.dialect, c.target, got.Target, got.MaxTime, err)
		}
	}
	if _, err := (&MCastSwarm{Target: "h", File: "f", Receivers: 1, Dialect: "pxe", Dir: "d", BlockSize: 1428}).config(); err == nil {
		t.Error("pxe with blksize 1428 accepted")
	}
	src := []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	for _, d := range []string{"native", "rfc2090", "pxe"} {
		if _, err := (&MCastSwarm{Target: "h", File: "f", Receivers: 1, Dialect: d, Dir: "d", SourceAddrs: src}).config(); err != nil {
			t.Errorf("%s with source addresses: %v", d, err)
		}
	}
}

// TestMCastErrorKind: failures are named by cause.
func TestMCastErrorKind(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		err  error
		ctx  context.Context
		want string
	}{
		{mtftp.ErrNativeUnsupported, context.Background(), ErrKindUnsupported},
		{fmt.Errorf("x: %w", tftp.ErrNoAnswer), context.Background(), ErrKindTimeout},
		{errors.New("mtftp: nothing from the server for 10s (3 of 9 stripes held)"), context.Background(), ErrKindTimeout},
		{&tftp.RemoteError{Code: tftp.ErrCodeNotFound}, context.Background(), "remote_1"},
		{&verifyError{ErrKindVerify, "x"}, context.Background(), ErrKindVerify},
		{fmt.Errorf("get: %w", context.Canceled), ctx, "cancelled"},
	} {
		if got := mcastErrorKind(c.err, c.ctx); got != c.want {
			t.Errorf("%v: %s, want %s", c.err, got, c.want)
		}
	}
}

// TestCompareMCast: two multicast reports compare; lower times and less
// overhead are better; a multicast report does not compare with a TFTP one.
func TestCompareMCast(t *testing.T) {
	a := MCastReport{Schema: MCastReportSchema, AllVerifiedSeconds: 4, ReceiverMs: Latency{P50: 1000, P95: 3000, P99: 4000},
		SuccessRatio: 1, Completed: 10, ReceivedRatio: 1.2, RepairsAsked: 40}
	b := a
	b.AllVerifiedSeconds, b.ReceivedRatio = 2, 1.5
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	kind, figs, err := Compare(ja, jb)
	if err != nil || kind != "mcast" {
		t.Fatalf("%s %v", kind, err)
	}
	byName := map[string]Figure{}
	for _, f := range figs {
		byName[f.Name] = f
	}
	if r, _ := byName["all verified s"].Ratio(); r != 0.5 || byName["all verified s"].Better() != "b" {
		t.Errorf("all verified: %v %s", r, byName["all verified s"].Better())
	}
	if byName["received/needed"].Better() != "a" {
		t.Errorf("received/needed: more overhead is not better")
	}
	jt, _ := json.Marshal(TFTPReport{Schema: TFTPReportSchema})
	if _, _, err := Compare(ja, jt); err == nil || !strings.Contains(err.Error(), "cannot compare a mcast report with a tftp report") {
		t.Errorf("mcast vs tftp: %v", err)
	}
}
