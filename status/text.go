package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText prints a snapshot as tables for a terminal (mtftpd status):
// the same clients, multicast sessions and recent transfers as the page.
// Every string is printed through Printable: names come from the network.
func (s Snapshot) WriteText(w io.Writer, recent int) error {
	s = s.printable()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	byID := map[uint64]Transfer{}
	for _, t := range s.Transfers {
		byID[t.ID] = t
	}
	var total float64
	for _, t := range s.Transfers {
		total += t.Rate
	}
	fmt.Fprintf(tw, "mtftpd at %s: %d clients, %d transfers running (%s), %d multicast sessions\n\n",
		s.Time.Local().Format("15:04:05"), len(s.Clients), len(s.Transfers), mbits(total), len(s.Sessions))

	if len(s.Clients) > 0 {
		fmt.Fprintln(tw, "CLIENT\tMAC\tARCH\tLEASE\tFETCHING\tPROGRESS\tRATE\tRETRANSMITS")
	}
	for _, c := range s.Clients {
		lease := "-"
		if c.LeaseExpiry != nil {
			lease = "ends in " + span(c.LeaseExpiry.Sub(s.Time))
			if c.Static {
				lease = "static, " + lease
			}
		}
		first := fmt.Sprintf("%s\t%s\t%s\t%s", c.IP, dash(c.MAC), dash(c.Arch), lease)
		lines := 0
		for _, id := range c.Transfers {
			t, ok := byID[id]
			if !ok {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", first, t.File, progress(t.Bytes, t.Size), mbits(t.Rate), t.Retransmits)
			first, lines = "\t\t\t", lines+1
		}
		for _, g := range c.Sessions {
			fmt.Fprintf(tw, "%s\tmulticast %s\t\t\t\n", first, g)
			first, lines = "\t\t\t", lines+1
		}
		if lines == 0 {
			fmt.Fprintf(tw, "%s\tidle\t\t\t\n", first)
		}
	}
	if len(s.Sessions) > 0 {
		fmt.Fprintln(tw, "\nMULTICAST\tDIALECT\tGROUP\tPROGRESS\tREPAIRS\tRECEIVERS")
		for _, m := range s.Sessions {
			rx := make([]string, len(m.Receivers))
			for i, r := range m.Receivers {
				rx[i] = r.Addr
				if r.Master {
					rx[i] += "*"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", m.File, m.Dialect, m.Group,
				progress(int64(m.Position), int64(m.Blocks)), m.Repairs, strings.Join(rx, " "))
		}
	}
	if n := min(recent, len(s.Recent)); n > 0 {
		fmt.Fprintln(tw, "\nENDED\tCLIENT\tFILE\tBYTES\tRATE\tRETRANSMITS\tOUTCOME")
		for _, t := range s.Recent[:n] {
			ended := "-"
			if t.End != nil {
				ended = span(s.Time.Sub(*t.End)) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\n", ended, t.Client, t.File, t.Bytes, mbits(t.Rate), t.Retransmits, t.Outcome)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mbits(bytesPerSec float64) string { return fmt.Sprintf("%.1f Mbit/s", bytesPerSec*8/1e6) }

// progress is a 10-cell bar and a percentage; "?" for an unknown size.
func progress(done, total int64) string {
	if total <= 0 {
		return fmt.Sprintf("%d B", done)
	}
	f := min(float64(done)/float64(total), 1)
	n := int(f * 10)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", 10-n) + "] " + fmt.Sprintf("%3.0f%%", f*100)
}

func span(d time.Duration) string {
	switch d = max(d, 0).Round(time.Second); {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	}
	return fmt.Sprintf("%d h", int(d.Hours()))
}
