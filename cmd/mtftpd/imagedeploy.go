package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/image"
	"github.com/mtftpd/mtftpd/mtftp"
)

// deployMemoryLimit is the soft heap limit of image deploy: 32 MiB of
// stripes, 16 MiB of chunks being assembled, two chunks per worker, and
// room for the collector.
const deployMemoryLimit = 128 << 20

const deployAbout = `Writes IMAGE (its name on the server, e.g. images/room.img) to DISK (a block
device or a file) by native multicast from SERVER (HOST[:PORT], the TFTP
address), falling back to HTTP Range requests (--http) or TFTP. Chunks the
disk already holds are not fetched (resume, delta); every chunk is checked
against its digest before it is written.`

func runImageDeploy(args []string) error {
	fs := newFlags("image deploy")
	httpURL := fs.String("http", "", "the server's HTTP mirror (http://HOST:PORT): index and unicast fallback by HTTP")
	unicast := fs.Bool("unicast", false, "no multicast: fetch the chunks by HTTP (or TFTP)")
	blank := fs.Bool("assume-blank", false, "the disk reads as zeros already: do not zero the image's holes")
	noResume := fs.Bool("no-resume", false, "do not read the disk for chunks it holds already: fetch every chunk")
	verify := fs.Bool("verify", false, "re-read the whole disk at the end and check the image digest")
	blksize := fs.Int("blksize", 1468, "TFTP blksize asked for (the multicast shard is 12 bytes less)")
	iface := fs.String("iface", "", "interface to join the multicast group on (default: the route's)")
	minRecv := fs.Int("min-receivers", 0, "ask the session to start once this many receivers joined")
	maxWait := fs.Duration("max-wait", 0, "ask the session to start at the latest this long after it began (server caps it)")
	settle := fs.Duration("settle", 0, "ask the session to start once nobody new joined for this long")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long without a word from the server")
	workers := fs.Int("workers", 0, "decode/write workers (default: one per core)")
	quiet := fs.BoolP("quiet", "q", false, "no progress bar and no summary")
	jsonOut := fs.Bool("json", false, "print the summary as JSON on stdout")
	verbose := fs.BoolP("verbose", "v", false, "log the receiver's events")
	pos, help, err := parseArgs(fs, args, 3, "need SERVER IMAGE DISK")
	if help || err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The deploy environment runs from RAM: what it holds is bounded
	// (stripes, chunks in flight), and a soft limit makes the collector
	// return the garbage of a long stream before the heap doubles.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(deployMemoryLimit)
	}
	log := zerolog.Nop()
	if *verbose {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	d := &image.Deployer{Opts: image.DeployOptions{
		Server: pos[0], Image: pos[1], Disk: pos[2], HTTP: *httpURL, Unicast: *unicast, AssumeBlank: *blank,
		NoResume: *noResume, Verify: *verify, Workers: *workers, BlockSize: *blksize, Interface: *iface,
		Start: mtftp.StartPolicy{MinReceivers: *minRecv, MaxWait: *maxWait, Settle: *settle}, Timeout: *timeout, Log: log,
	}}
	phases := []string{}
	bar := newByteBar(ctx, !*quiet, pos[2], 0)
	if bar != nil {
		go func() {
			for ctx.Err() == nil {
				bar.set(d.Progress())
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	d.Opts.Phase = func(ph image.Phase) { phases = append(phases, string(ph)) }
	res, err := d.Deploy(ctx)
	stop() // ends the bar's goroutine
	bar.finish(err)
	if err != nil {
		return err
	}
	if *jsonOut {
		return printDeployJSON(res)
	}
	if !*quiet {
		ix := res.Index
		var parts []string
		for _, ph := range phases {
			parts = append(parts, fmt.Sprintf("%s %.1fs", ph, res.Phases[image.Phase(ph)].Seconds()))
		}
		via := res.Via
		if via == "" {
			via = "nothing (the disk held every chunk)"
		}
		fmt.Printf("%s: %s of %s written to %s in %.1fs via %s: %d chunks fetched (%s stored), %d held already, %d holes; %s%s\n",
			pos[1], sizeString(res.Written.Bytes), sizeString(int64(ix.Header.RawSize)), pos[2], res.Duration.Seconds(), via,
			res.Needed, sizeString(res.NeedBytes), res.Held, res.Written.Holes, strings.Join(parts, ", "), verified(*verify))
	}
	return nil
}

// deploySummary is `image deploy --json`.
type deploySummary struct {
	RawSize       uint64             `json:"raw_size"`
	StoredSize    int64              `json:"stored_size"`
	Chunks        int                `json:"chunks"`
	Fetched       int                `json:"chunks_fetched"`
	FetchedStored int64              `json:"fetched_stored_bytes"`
	Held          int                `json:"chunks_held"`
	Refetched     int                `json:"chunks_refetched"`
	Holes         int64              `json:"holes_zeroed"`
	Written       int64              `json:"bytes_written"`
	Via           string             `json:"via"`
	Seconds       float64            `json:"seconds"`
	Phases        map[string]float64 `json:"phases"`
	Multicast     map[string]int64   `json:"multicast,omitempty"`
}

func printDeployJSON(res image.DeployResult) error {
	s := deploySummary{RawSize: res.Index.Header.RawSize, StoredSize: res.Index.FileSize(), Chunks: len(res.Index.Entries),
		Fetched: res.Needed, FetchedStored: res.NeedBytes, Held: res.Held, Refetched: res.Refetched, Holes: res.Written.Holes, Written: res.Written.Bytes,
		Via: res.Via, Seconds: res.Duration.Seconds(), Phases: map[string]float64{}}
	for p, d := range res.Phases {
		s.Phases[string(p)] = d.Seconds()
	}
	if res.Via == "multicast" {
		m := res.Multicast
		s.Multicast = map[string]int64{"shards": m.Shards, "duplicate": m.Duplicate, "rebuilt": m.Rebuilt, "lost": m.Lost,
			"naks": m.Naks, "moves": int64(m.Moves), "rejoins": int64(m.Rejoins)}
	}
	e := json.NewEncoder(os.Stdout)
	e.SetIndent("", "  ")
	return e.Encode(s)
}

func verified(v bool) string {
	if v {
		return "; disk verified against the image digest"
	}
	return ""
}

const captureAbout = `Images DISK (a block device, a raw file, or any image qemu-img reads) and
streams it to URL, the image's place on an mtftpd mirror
(http://HOST:PORT/images/NAME), with the server's upload token. The server
checks every chunk and the image digest, and replaces nothing unless all of
it checked out. Nothing is staged on this machine.`

func runImageCapture(args []string) error {
	fs := newFlags("image capture")
	token := fs.String("token", "", "the server's imaging.upload_token (visible in the process list: prefer --token-file or $MTFTPD_UPLOAD_TOKEN)")
	tokenFile := fs.String("token-file", "", "read the upload token from this file")
	chunkSize := fs.Int("chunk-size", image.DefaultChunkSize, "chunk size in bytes: a power of two from 65536 to 16777216")
	quiet := fs.BoolP("quiet", "q", false, "no summary")
	pos, help, err := parseArgs(fs, args, 2, "need DISK URL")
	if help || err != nil {
		return err
	}
	tok := *token
	switch {
	case *tokenFile != "":
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		tok = strings.TrimSpace(string(b))
	case tok == "":
		tok = os.Getenv("MTFTPD_UPLOAD_TOKEN")
	}
	if tok == "" {
		return errors.New("need the upload token: --token-file, --token or $MTFTPD_UPLOAD_TOKEN")
	}
	if err := image.CheckChunkSize(*chunkSize); err != nil {
		return fmt.Errorf("--chunk-size: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	src, err := image.OpenSource(ctx, pos[0])
	if err != nil {
		return err
	}
	defer src.Close()
	meta, err := image.SourceMeta(src, pos[0], buildVersion())
	if err != nil {
		return err
	}
	start := time.Now()
	ix, _, err := image.Capture(ctx, &http.Client{}, src, pos[1], tok, meta, image.CreateOptions{ChunkSize: *chunkSize})
	if err != nil {
		return err
	}
	if !*quiet {
		fmt.Printf("%s captured to %s: raw %s, stored %s (ratio %s), %d chunks, %.1f MB/s\n", pos[0], pos[1],
			sizeString(int64(ix.Header.RawSize)), sizeString(ix.FileSize()), ratio(ix), ix.Header.Chunks,
			float64(ix.Header.RawSize)/time.Since(start).Seconds()/1e6)
	}
	return nil
}
