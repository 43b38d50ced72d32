package bench

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

func readSoakSample(t *testing.T, name string) SoakSample {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ParseSoakSample(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The two snapshots were captured from `mtftpd serve --demo`: idle, then
// after three TFTP downloads, one missing file and two HTTP requests.
func TestParseSoakSampleCaptured(t *testing.T) {
	first := readSoakSample(t, "soak-first.prom")
	last := readSoakSample(t, "soak-last.prom")
	if first.Goroutines != 11 || first.FDs != 14 || first.RSSBytes != 1.7354752e+07 {
		t.Errorf("first: goroutines %v fds %v rss %v, want 11 14 1.7354752e+07", first.Goroutines, first.FDs, first.RSSBytes)
	}
	if last.TFTPCompleted != 3 || last.TFTPActive != 0 || last.HTTP5xx != 0 || last.HeapBytes != 2.623688e+06 {
		t.Errorf("last: completed %v active %v 5xx %v heap %v, want 3 0 0 2.623688e+06",
			last.TFTPCompleted, last.TFTPActive, last.HTTP5xx, last.HeapBytes)
	}
	last.ElapsedSec, last.LoadOK, last.LoadFail = 130, 7, 1
	if got, want := last.CSV(), "130,18.9,2.5,11,14,0,3,0,0,0,0,7,1"; got != want {
		t.Errorf("CSV row %q, want %q", got, want)
	}
	var out bytes.Buffer
	if err := JudgeSoak(&out, first, last, nil); err != nil {
		t.Errorf("JudgeSoak of an idle server: %v", err)
	}
	for _, want := range []string{"RSS MB: first 16.6, max 18.9, last 18.9", "goroutines: first 11, max 11, after drain 11",
		"open fds: first 14, max 14, after drain 14", "tftp transfers completed 3, failed 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// Only code="5.." counts as a 5xx, summed over its label sets.
func TestParseSoakSample5xx(t *testing.T) {
	in := `# TYPE mtftpd_http_responses_total counter
mtftpd_http_responses_total{code="200"} 40
mtftpd_http_responses_total{code="500"} 2
mtftpd_http_responses_total{code="503"} 3
mtftpd_http_responses_total{code="404"} 7
`
	s, err := ParseSoakSample(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTP5xx != 5 {
		t.Errorf("5xx = %v, want 5", s.HTTP5xx)
	}
}

func TestParseSoakSampleBad(t *testing.T) {
	if _, err := ParseSoakSample(strings.NewReader("go_goroutines{ 1\n")); err == nil {
		t.Error("a broken exposition parsed")
	}
	big := strings.Repeat("# "+strings.Repeat("x", 1000)+"\n", MaxMetricsBytes/1000+10)
	if _, err := ParseSoakSample(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("an oversized /metrics: %v, want a size error", err)
	}
}

// The leak margins: goroutines +10 and fds +5 over the first sample pass,
// one more fails.
func TestJudgeSoakLeak(t *testing.T) {
	first := SoakSample{Goroutines: 11, FDs: 14}
	ok := SoakSample{Goroutines: 21, FDs: 19}
	if err := JudgeSoak(new(bytes.Buffer), first, ok, nil); err != nil {
		t.Errorf("at the margins: %v", err)
	}
	for _, last := range []SoakSample{{Goroutines: 22, FDs: 14}, {Goroutines: 11, FDs: 20}} {
		err := JudgeSoak(new(bytes.Buffer), first, last, nil)
		if !errors.Is(err, ErrSoakLeak) {
			t.Errorf("%+v: %v, want ErrSoakLeak", last, err)
		}
	}
}

func TestSoakMax(t *testing.T) {
	csv := SoakCSVHeader + "\n0,16.7,2.5,11,14,0,0,0,0,0,0,0,0\n10,40.2,9.0,60,33,4,12,0,5,0,0,9,0\n20,30.0,3.1,12,15,0,30,0,9,0,0,20,0\n"
	m, err := SoakMax(strings.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	if m["rss_mb"] != 40.2 || m["goroutines"] != 60 || m["fds"] != 33 {
		t.Errorf("max %v", m)
	}
	if _, err := SoakMax(strings.NewReader("a,b\n1,2\n")); err == nil {
		t.Error("a foreign CSV was read")
	}
	if _, err := SoakMax(strings.NewReader(SoakCSVHeader + "\n0,x,2.5,11,14,0,0,0,0,0,0,0,0\n")); err == nil {
		t.Error("a non-number was read")
	}
}

func FuzzParseSoakSample(f *testing.F) {
	for _, n := range []string{"soak-first.prom", "soak-last.prom"} {
		b, err := os.ReadFile("testdata/" + n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseSoakSample(bytes.NewReader(b))
	})
}
