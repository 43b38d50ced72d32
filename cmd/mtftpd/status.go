package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mtftpd/mtftpd/imaging"
	"github.com/mtftpd/mtftpd/status"
)

const statusAbout = "URL is the server's HTTP mirror (default http://" + demoHTTP + ", the --demo address)."

// runStatus prints what a running server is doing, from its
// /api/transfers, once or (--watch) every interval until interrupted.
func runStatus(args []string) error {
	fs := newFlags("status")
	watch := fs.Bool("watch", false, "redraw until interrupted")
	interval := fs.Duration("interval", time.Second, "redraw interval with --watch")
	recent := fs.Int("recent", 10, "finished transfers to show")
	pos, help, err := parseFlags(fs, args)
	if help || err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("unexpected argument %q", pos[1])
	}
	if *interval <= 0 {
		return fmt.Errorf("--interval %v: must be positive", *interval)
	}
	if *recent < 0 {
		return fmt.Errorf("--recent %d: must be 0 or more", *recent)
	}
	base := "http://" + demoHTTP
	if len(pos) == 1 {
		base = pos[0]
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
	}
	url := strings.TrimRight(base, "/") + "/api/transfers"
	if *recent > status.DefaultRecent {
		url += fmt.Sprintf("?recent=%d", *recent) // the default answer is shared with the pages
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		s, err := fetchStatus(ctx, client, url)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if *watch {
			fmt.Print("\033[H\033[2J") // cursor home, clear screen
		}
		s.WriteText(os.Stdout, *recent)
		// The reimaging machines, when the server has any (404 without
		// imaging.dir: nothing to show).
		if b, err := imagingCall(client, http.MethodGet, strings.TrimRight(base, "/")+"/api/imaging", "", nil); err == nil {
			var o imaging.Overview
			if json.Unmarshal(b, &o) == nil && len(o.Machines) > 0 {
				fmt.Println()
				writeImaging(os.Stdout, o)
			}
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

func fetchStatus(ctx context.Context, c *http.Client, url string) (status.Snapshot, error) {
	var s status.Snapshot
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		// The body is the server's (or whatever answers there): printed
		// escaped, as everything else from the API.
		return s, fmt.Errorf("%s: %s %s", url, status.Printable(resp.Status), status.Printable(strings.TrimSpace(string(b))))
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("%s: not a status answer: %w", url, err)
	}
	return s, nil
}
