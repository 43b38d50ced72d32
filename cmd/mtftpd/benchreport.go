package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mtftpd/mtftpd/bench"
)

var benchReportAbout = `The benchmark scripts (scripts/bench-*.sh) write what they measured as
one JSON document per run; this renders it as markdown (docs/benchmarks.md,
bench-out/*.md). KIND: ` + strings.Join(bench.ReportKinds, ", ") + `.`

func runBenchReport(args []string) error {
	fs := newFlags("bench report")
	in := fs.String("in", "-", "the run's JSON document (- for stdin)")
	out := fs.StringP("out", "o", "-", "write the markdown here (replaced atomically; - for stdout)")
	pos, help, err := parseFlags(fs, args)
	if help || err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError{fmt.Errorf("need one KIND (%s)", strings.Join(bench.ReportKinds, ", "))}
	}
	var r io.Reader = os.Stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var md bytes.Buffer
	if err := bench.Render(&md, pos[0], r); err != nil {
		return err
	}
	return writeOutput(*out, md.Bytes())
}

var benchSoakCheckAbout = `scripts/soak.sh's reading of the server's /metrics (saved with curl):
--header prints the soak CSV's header; --row SNAPSHOT prints one CSV row
of it; FIRST LAST prints RSS, goroutines, open fds and the transfer
counters, and fails when goroutines or fds after the drain stay above the
first snapshot plus a margin (a leak). --csv adds the maxima of the run.`

func runBenchSoakCheck(args []string) error {
	fs := newFlags("bench soak")
	header := fs.Bool("header", false, "print the CSV header and exit")
	row := fs.Bool("row", false, "print one CSV row of the snapshot given")
	elapsed := fs.Int("elapsed", 0, "--row: seconds since the soak began")
	loadOK := fs.Int("load-ok", 0, "--row: load loop iterations that succeeded so far")
	loadFail := fs.Int("load-fail", 0, "--row: load loop iterations that failed so far")
	csvPath := fs.String("csv", "", "the soak CSV, for the maxima")
	pos, help, err := parseFlags(fs, args)
	if help || err != nil {
		return err
	}
	switch {
	case *header:
		fmt.Println(bench.SoakCSVHeader)
		return nil
	case *row:
		if len(pos) != 1 {
			fs.Usage()
			return usageError{errors.New("--row needs one /metrics snapshot")}
		}
		s, err := readSoakSample(pos[0])
		if err != nil {
			return err
		}
		s.ElapsedSec, s.LoadOK, s.LoadFail = *elapsed, *loadOK, *loadFail
		fmt.Println(s.CSV())
		return nil
	}
	if len(pos) != 2 {
		fs.Usage()
		return usageError{errors.New("need FIRST and LAST /metrics snapshots")}
	}
	first, err := readSoakSample(pos[0])
	if err != nil {
		return err
	}
	last, err := readSoakSample(pos[1])
	if err != nil {
		return err
	}
	var maxima map[string]float64
	if *csvPath != "" {
		f, err := os.Open(*csvPath)
		if err != nil {
			return err
		}
		defer f.Close()
		if maxima, err = bench.SoakMax(f); err != nil {
			return err
		}
	}
	return bench.JudgeSoak(os.Stdout, first, last, maxima)
}

func readSoakSample(path string) (bench.SoakSample, error) {
	f, err := os.Open(path)
	if err != nil {
		return bench.SoakSample{}, err
	}
	defer f.Close()
	s, err := bench.ParseSoakSample(f)
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
