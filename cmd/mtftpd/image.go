package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mtftpd/mtftpd/image"
)

const createAbout = "SRC is a block device, a raw disk file, or any image qemu-img reads (qcow2, vmdk, vhdx, ...)."

func runImageCreate(args []string) error {
	fs := newFlags("image create")
	chunkSize := fs.Int("chunk-size", image.DefaultChunkSize, "chunk size in bytes: a power of two from 65536 to 16777216")
	out := fs.StringP("output", "o", "", "image file to write (required; written as IMAGE.tmp-* and renamed when complete)")
	quiet := fs.BoolP("quiet", "q", false, "no progress bar and no summary")
	pos, help, err := parseFlags(fs, args)
	if help || err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		fs.Usage()
		return errors.New("need SRC and -o IMAGE")
	}
	if err := image.CheckChunkSize(*chunkSize); err != nil {
		return fmt.Errorf("--chunk-size: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srcPath := pos[0]
	src, err := image.OpenSource(ctx, srcPath)
	if err != nil {
		return err
	}
	defer src.Close()
	meta, err := image.SourceMeta(src, srcPath, buildVersion())
	if err != nil {
		return err
	}
	opts := image.CreateOptions{ChunkSize: *chunkSize}
	bar := newByteBar(ctx, !*quiet, srcPath, src.Size())
	if bar != nil {
		opts.Progress = func(n int64) { bar.set(n, 0) }
	}
	start := time.Now()
	ix, err := image.WriteFile(ctx, src, *out, meta, opts)
	bar.finish(err)
	if err != nil {
		return err
	}
	if !*quiet {
		d := time.Since(start)
		st := ix.Stats()
		fmt.Printf("%s: raw %s, stored %s (ratio %s), %d chunks, %d holes, %d dedup'd, %.1f MB/s, image digest %s\n",
			*out, sizeString(int64(ix.Header.RawSize)), sizeString(ix.FileSize()), ratio(ix), ix.Header.Chunks,
			st.Holes, st.Dups, float64(ix.Header.RawSize)/d.Seconds()/1e6, hex.EncodeToString(ix.Header.ImageDigest[:]))
	}
	return nil
}

// imageInfo is `image info --json`.
type imageInfo struct {
	Path           string    `json:"path"`
	RawSize        uint64    `json:"raw_size"`
	ChunkSize      uint32    `json:"chunk_size"`
	Chunks         uint32    `json:"chunks"`
	Holes          int       `json:"holes"`
	Dedup          int       `json:"dedup"`
	StoredRaw      int       `json:"stored_uncompressed"`
	DataSize       uint64    `json:"data_size"`
	FileSize       int64     `json:"file_size"`
	Ratio          float64   `json:"ratio"`
	PartitionTable string    `json:"partition_table"`
	Created        time.Time `json:"created"`
	Source         string    `json:"source"`
	Tool           string    `json:"tool"`
	ImageDigest    string    `json:"image_digest"`
	IndexDigest    string    `json:"index_digest"`
}

func runImageInfo(args []string) error {
	fs := newFlags("image info")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, help, err := parseArgs(fs, args, 1, "need IMAGE")
	if help || err != nil {
		return err
	}
	f, ix, err := image.Open(pos[0])
	if err != nil {
		return err
	}
	f.Close()
	st, h := ix.Stats(), ix.Header
	info := imageInfo{
		Path: pos[0], RawSize: h.RawSize, ChunkSize: h.ChunkSize, Chunks: h.Chunks,
		Holes: st.Holes, Dedup: st.Dups, StoredRaw: st.Raw, DataSize: h.DataLen, FileSize: ix.FileSize(),
		Ratio: float64(h.RawSize) / float64(ix.FileSize()), PartitionTable: h.Meta.PartitionTable,
		Created: h.Meta.Created, Source: h.Meta.Source, Tool: h.Meta.Tool,
		ImageDigest: hex.EncodeToString(h.ImageDigest[:]), IndexDigest: hex.EncodeToString(h.IndexDigest[:]),
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	printInfo(os.Stdout, info)
	return nil
}

func printInfo(w io.Writer, i imageInfo) {
	pt := i.PartitionTable
	if pt == "" {
		pt = "none found"
	}
	fmt.Fprintf(w, "image:           %s\n", i.Path)
	fmt.Fprintf(w, "raw size:        %d bytes (%s)\n", i.RawSize, sizeString(int64(i.RawSize)))
	fmt.Fprintf(w, "chunk size:      %d bytes (%s)\n", i.ChunkSize, sizeString(int64(i.ChunkSize)))
	fmt.Fprintf(w, "chunks:          %d (%d holes, %d dedup'd, %d stored uncompressed)\n", i.Chunks, i.Holes, i.Dedup, i.StoredRaw)
	fmt.Fprintf(w, "stored size:     %d bytes (%s; chunk data %d bytes)\n", i.FileSize, sizeString(i.FileSize), i.DataSize)
	fmt.Fprintf(w, "ratio:           %.2f:1\n", i.Ratio)
	fmt.Fprintf(w, "partition table: %s\n", pt)
	fmt.Fprintf(w, "created:         %s\n", i.Created.Format(time.RFC3339))
	fmt.Fprintf(w, "source:          %s\n", i.Source)
	fmt.Fprintf(w, "tool:            %s\n", i.Tool)
	fmt.Fprintf(w, "image digest:    %s\n", i.ImageDigest)
	fmt.Fprintf(w, "index digest:    %s\n", i.IndexDigest)
}

func runImageVerify(args []string) error {
	fs := newFlags("image verify")
	quiet := fs.BoolP("quiet", "q", false, "no progress bar and no summary")
	pos, help, err := parseArgs(fs, args, 1, "need IMAGE")
	if help || err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var bar *byteBar
	var progress func(int64)
	if !*quiet {
		if _, ix, err := image.Open(pos[0]); err == nil {
			bar = newByteBar(ctx, true, pos[0], int64(ix.Header.RawSize))
			if bar != nil {
				progress = func(n int64) { bar.set(n, 0) }
			}
		}
	}
	start := time.Now()
	ix, err := image.Verify(ctx, pos[0], 0, progress)
	bar.finish(err)
	if err != nil {
		return err
	}
	if !*quiet {
		st := ix.Stats()
		fmt.Printf("%s: ok, %d chunks (%d holes, %d dedup'd), raw %s, %.1f MB/s, image digest %s\n",
			pos[0], ix.Header.Chunks, st.Holes, st.Dups, sizeString(int64(ix.Header.RawSize)),
			float64(ix.Header.RawSize)/time.Since(start).Seconds()/1e6, hex.EncodeToString(ix.Header.ImageDigest[:]))
	}
	return nil
}

func ratio(ix *image.Index) string {
	return fmt.Sprintf("%.2f:1", float64(ix.Header.RawSize)/float64(ix.FileSize()))
}

// sizeString is a byte count in binary units, for people.
func sizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n), 0
	for f >= unit && u < 5 {
		f /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTPE"[u-1])
}
