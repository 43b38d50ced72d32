package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/mtftpd/mtftpd/imaging"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/status"
)

// imagingConn holds the flags every imaging command has: where the
// server is and its admin token.
type imagingConn struct{ server, cfgPath, token *string }

func imagingFlags(fs *pflag.FlagSet) imagingConn {
	return imagingConn{
		server:  fs.String("server", "", "the server's mirror URL (default: from --config's http.listen, else http://127.0.0.1:8080)"),
		cfgPath: fs.String("config", "", "the server's config file, for http.listen and imaging.admin_token"),
		token:   fs.String("token", "", "imaging.admin_token (default: $MTFTPD_ADMIN_TOKEN, else the config's)"),
	}
}

// target is the server's base URL and admin token.
func (c imagingConn) target() (string, string, error) {
	return imagingTarget(*c.server, *c.cfgPath, *c.token)
}

// imagingClient is the HTTP client of the imaging commands.
var imagingClient = &http.Client{Timeout: 30 * time.Second}

// runImagingAdd adds a task through a running server's /api/imaging
// (docs/imaging.md).
func runImagingAdd(args []string) error {
	fs := newFlags("imaging add")
	var t imaging.Task
	var deploy, capture string
	var retries int
	var noVerify bool
	var maxWait, settle time.Duration
	fs.StringVar(&t.Name, "name", "", "task name (letters, digits, . _ -)")
	fs.StringVar(&deploy, "deploy", "", "deploy this image (a name in imaging.dir); this or --capture")
	fs.StringVar(&capture, "capture", "", "capture one machine's disk into this image name")
	macs := fs.StringArray("mac", nil, "a machine's MAC (repeatable)")
	hosts := fs.StringArray("host", nil, "a [[dhcp.host]] hostname (repeatable)")
	fs.BoolVar(&t.Unknown, "unknown", false, "every machine no other task names and no [[dhcp.host]] knows")
	fs.StringVar(&t.Disk, "disk", "", "target disk (default: the first whole disk large enough)")
	fs.StringVar(&t.After, "after", "reboot", "reboot, poweroff or wait")
	fs.IntVar(&retries, "retries", config.DefaultTaskRetries, "attempts after the first")
	fs.BoolVar(&noVerify, "no-verify", false, "do not re-read the disk to check the image digest")
	fs.IntVar(&t.MinReceivers, "min-receivers", 0, "start the multicast session once this many machines joined")
	fs.DurationVar(&maxWait, "max-wait", 0, "...or at the latest this long after it began")
	fs.DurationVar(&settle, "settle", 0, "...or once nobody new joined for this long")
	conn := imagingFlags(fs)
	if _, help, err := parseArgs(fs, args, 0, ""); help || err != nil {
		return err
	}
	switch {
	case deploy != "" && capture == "":
		t.Action, t.Image = "deploy", deploy
	case capture != "" && deploy == "":
		t.Action, t.Image = "capture", capture
	default:
		return errors.New("give one of --deploy IMAGE or --capture NAME")
	}
	base, admin, err := conn.target()
	if err != nil {
		return err
	}
	t.MACs, t.Hosts, t.Retries = *macs, *hosts, &retries
	if noVerify {
		f := false
		t.Verify = &f
	}
	t.MaxWait.Duration, t.Settle.Duration = maxWait, settle
	body, _ := json.Marshal(t)
	if _, err := imagingCall(imagingClient, http.MethodPost, base+"/api/imaging/tasks", admin, body); err != nil {
		return err
	}
	fmt.Printf("task %s added\n", t.Name)
	return nil
}

func runImagingCancel(args []string) error {
	fs := newFlags("imaging cancel")
	conn := imagingFlags(fs)
	pos, help, err := parseArgs(fs, args, 1, "need the task's NAME")
	if help || err != nil {
		return err
	}
	base, admin, err := conn.target()
	if err != nil {
		return err
	}
	if _, err := imagingCall(imagingClient, http.MethodDelete, base+"/api/imaging/tasks/"+url.PathEscape(pos[0]), admin, nil); err != nil {
		return err
	}
	fmt.Printf("task %s cancelled\n", pos[0])
	return nil
}

func runImagingList(args []string) error {
	fs := newFlags("imaging list")
	conn := imagingFlags(fs)
	if _, help, err := parseArgs(fs, args, 0, ""); help || err != nil {
		return err
	}
	base, _, err := conn.target()
	if err != nil {
		return err
	}
	b, err := imagingCall(imagingClient, http.MethodGet, base+"/api/imaging", "", nil)
	if err != nil {
		return err
	}
	var o imaging.Overview
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("%s/api/imaging: not an imaging answer: %w", base, err)
	}
	writeImaging(os.Stdout, o)
	return nil
}

// imagingTarget resolves the server URL and admin token: flags, then the
// environment, then the config file.
func imagingTarget(server, cfgPath, token string) (string, string, error) {
	var cfg config.Config
	if cfgPath != "" {
		cfg = config.Defaults()
		if err := config.Load(cfgPath, &cfg); err != nil {
			return "", "", err
		}
	}
	if server == "" {
		server = "http://127.0.0.1:8080"
		if l := cfg.HTTP.Listen; l.IsValid() {
			server = "http://" + dialable(l).String()
		}
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	if token == "" {
		token = os.Getenv("MTFTPD_ADMIN_TOKEN")
	}
	if token == "" {
		token = cfg.Imaging.AdminToken
	}
	return strings.TrimRight(server, "/"), token, nil
}

func imagingCall(c *http.Client, method, url, token string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized && token == "" {
			hint = " (give --token, MTFTPD_ADMIN_TOKEN or --config with imaging.admin_token)"
		}
		if resp.StatusCode == http.StatusNotFound && strings.HasSuffix(url, "/api/imaging") {
			hint = " (is imaging.dir set on that server?)"
		}
		return nil, fmt.Errorf("%s %s: %s: %s%s", method, url, status.Printable(resp.Status), status.Printable(strings.TrimSpace(string(b))), hint)
	}
	return b, nil
}

// writeImaging prints the machines as a table: machine, task, state,
// progress, time, reason. Every string is printed through Printable:
// host names and reasons come from the network.
func writeImaging(w io.Writer, o imaging.Overview) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tTASK\tSTATE\t%\tTIME\tREASON")
	for _, m := range o.Machines {
		name := m.MAC
		if m.Host != "" {
			name += " " + m.Host
		}
		pct := "-"
		if m.Total > 0 {
			pct = fmt.Sprintf("%.0f", 100*float64(m.Written)/float64(m.Total))
		}
		when := "-"
		if m.Started != nil {
			when = (time.Duration(m.Seconds) * time.Second).String()
		}
		st := m.State
		if m.Attempts > 1 {
			st = fmt.Sprintf("%s (attempt %d)", st, m.Attempts)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", status.Printable(name), status.Printable(m.Task), st, pct, when, status.Printable(m.Reason))
	}
	tw.Flush()
	for _, s := range o.Sessions {
		eta := "-"
		if s.ETASeconds >= 0 {
			eta = (time.Duration(s.ETASeconds) * time.Second).String()
		}
		fmt.Fprintf(w, "multicast %s %s: %d receivers, %.1f MB/s, wire %.2f× the file, about %s to go\n",
			s.Dialect, status.Printable(s.File), s.Receivers, s.RateMBps, s.WireRatio, eta)
	}
}
