package bench

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Figure is one main figure of two reports side by side.
type Figure struct {
	Name string
	A, B float64
	// HigherIsBetter says which way is good (MB/s: true; latency: false).
	HigherIsBetter bool
}

// Ratio returns B/A, and false when A is 0 (no ratio).
func (f Figure) Ratio() (float64, bool) {
	if f.A == 0 {
		return 0, false
	}
	return f.B / f.A, true
}

// Better returns "a", "b" or "=": which report is better on this figure.
func (f Figure) Better() string {
	switch {
	case f.A == f.B:
		return "="
	case (f.B > f.A) == f.HigherIsBetter:
		return "b"
	}
	return "a"
}

// Compare reads two JSON reports of the same kind (`mtftpd bench tftp`,
// `mtftpd bench mcast` or `mtftpd bench dhcp`) and returns their kind
// ("tftp", "mcast", "dhcp") and main figures.
func Compare(a, b []byte) (kind string, figs []Figure, err error) {
	ka, err := reportKind(a)
	if err != nil {
		return "", nil, fmt.Errorf("first report: %w", err)
	}
	kb, err := reportKind(b)
	if err != nil {
		return "", nil, fmt.Errorf("second report: %w", err)
	}
	if ka != kb {
		return "", nil, fmt.Errorf("cannot compare a %s report with a %s report", ka, kb)
	}
	switch ka {
	case "tftp":
		var ra, rb TFTPReport
		if err := unmarshalBoth(a, b, &ra, &rb); err != nil {
			return "", nil, err
		}
		return ka, tftpFigures(ra, rb), nil
	case "mcast":
		var ra, rb MCastReport
		if err := unmarshalBoth(a, b, &ra, &rb); err != nil {
			return "", nil, err
		}
		return ka, mcastFigures(ra, rb), nil
	default:
		var ra, rb DHCPReport
		if err := unmarshalBoth(a, b, &ra, &rb); err != nil {
			return "", nil, err
		}
		return ka, dhcpFigures(ra, rb), nil
	}
}

func unmarshalBoth(a, b []byte, ra, rb any) error {
	if err := json.Unmarshal(a, ra); err != nil {
		return fmt.Errorf("first report: %w", err)
	}
	if err := json.Unmarshal(b, rb); err != nil {
		return fmt.Errorf("second report: %w", err)
	}
	return nil
}

// reportKind tells a TFTP report (its schema field) from a DHCP report
// (exchanges_per_sec).
func reportKind(b []byte) (string, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return "", fmt.Errorf("not a JSON object: %w", err)
	}
	if raw, ok := probe["schema"]; ok {
		var schema string
		if json.Unmarshal(raw, &schema) == nil {
			switch schema {
			case TFTPReportSchema:
				return "tftp", nil
			case MCastReportSchema:
				return "mcast", nil
			}
		}
		return "", fmt.Errorf("unknown schema %s (want %q or %q)", raw, TFTPReportSchema, MCastReportSchema)
	}
	if _, ok := probe["exchanges_per_sec"]; ok {
		return "dhcp", nil
	}
	return "", errors.New("neither a bench tftp report (schema) nor a bench dhcp report (exchanges_per_sec)")
}

func tftpFigures(a, b TFTPReport) []Figure {
	return []Figure{
		{"aggregate MB/s", a.AggregateMBps, b.AggregateMBps, true},
		{"transfer p50 ms", a.TransferMs.P50, b.TransferMs.P50, false},
		{"transfer p95 ms", a.TransferMs.P95, b.TransferMs.P95, false},
		{"transfer p99 ms", a.TransferMs.P99, b.TransferMs.P99, false},
		{"success ratio", a.SuccessRatio, b.SuccessRatio, true},
		{"completed", float64(a.Completed), float64(b.Completed), true},
		{"failed", float64(a.Failed), float64(b.Failed), false},
		{"retransmits seen", float64(a.Duplicates + a.OutOfOrder), float64(b.Duplicates + b.OutOfOrder), false},
		{"client timeouts", float64(a.Timeouts), float64(b.Timeouts), false},
	}
}

func mcastFigures(a, b MCastReport) []Figure {
	return []Figure{
		{"all verified s", a.AllVerifiedSeconds, b.AllVerifiedSeconds, false},
		{"receiver p50 ms", a.ReceiverMs.P50, b.ReceiverMs.P50, false},
		{"receiver p95 ms", a.ReceiverMs.P95, b.ReceiverMs.P95, false},
		{"receiver p99 ms", a.ReceiverMs.P99, b.ReceiverMs.P99, false},
		{"success ratio", a.SuccessRatio, b.SuccessRatio, true},
		{"completed", float64(a.Completed), float64(b.Completed), true},
		{"failed", float64(a.Failed), float64(b.Failed), false},
		{"received/needed", a.ReceivedRatio, b.ReceivedRatio, false},
		{"repairs asked", float64(a.RepairsAsked), float64(b.RepairsAsked), false},
	}
}

func dhcpFigures(a, b DHCPReport) []Figure {
	return []Figure{
		{"exchanges/s", a.ExchangesPerSec, b.ExchangesPerSec, true},
		{"latency p50 ms", a.LatencyMs.P50, b.LatencyMs.P50, false},
		{"latency p95 ms", a.LatencyMs.P95, b.LatencyMs.P95, false},
		{"latency p99 ms", a.LatencyMs.P99, b.LatencyMs.P99, false},
		{"completed", float64(a.Completed), float64(b.Completed), true},
		{"failed", float64(a.Failed), float64(b.Failed), false},
		{"NAKs", float64(a.NAKs), float64(b.NAKs), false},
		{"retransmits", float64(a.Retransmits), float64(b.Retransmits), false},
	}
}
