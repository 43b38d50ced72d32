package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/report-*.md from the templates")

// TestRenderGolden renders each testdata/report-<kind>.json and compares
// the markdown with testdata/report-<kind>.md (go test ./bench -run
// TestRenderGolden -update rewrites them; review the diff).
func TestRenderGolden(t *testing.T) {
	for _, kind := range ReportKinds {
		t.Run(kind, func(t *testing.T) {
			in, err := os.Open(filepath.Join("testdata", "report-"+kind+".json"))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var got bytes.Buffer
			if err := Render(&got, kind, in); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "report-"+kind+".md")
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				gl, wl := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
				for i := 0; i < len(gl) || i < len(wl); i++ {
					var g, w string
					if i < len(gl) {
						g = gl[i]
					}
					if i < len(wl) {
						w = wl[i]
					}
					if g != w {
						t.Fatalf("%s differs from %s at line %d:\n got: %q\nwant: %q\n(-update rewrites it)", kind, golden, i+1, g, w)
					}
				}
			}
		})
	}
}

func TestRenderBadInput(t *testing.T) {
	var out bytes.Buffer
	if err := Render(&out, "nope", strings.NewReader("{}")); !errors.Is(err, ErrReportKind) {
		t.Errorf("unknown kind: %v, want ErrReportKind", err)
	}
	if err := Render(&out, "mcast", strings.NewReader(`{"rows": [], "colour": 1}`)); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("a misspelt field: %v, want an error naming it", err)
	}
	if err := Render(&out, "peers", strings.NewReader(`{"points": [`)); err == nil {
		t.Error("a truncated document rendered")
	}
	if out.Len() != 0 {
		t.Errorf("a failed render wrote %q", out.String())
	}
}

func TestRatioText(t *testing.T) {
	for _, c := range []struct {
		a, b any
		want string
	}{{"382.4", "31", "12.34×"}, {"", "31", "n/a"}, {"n/a", "2", "n/a"}, {"3", "0", "n/a"}, {3.0, 2, "1.50×"}} {
		if got := ratioText(c.a, c.b); got != c.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

// TestRenderImageParts renders an image run whose parts did not all run
// (PARTS): their sections are left out, the rest renders.
func TestRenderImageParts(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "report-image.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, drop := range [][]string{{"room"}, {"rss"}, {"create", "one"}, {"create", "one", "rss", "room"}} {
		var doc map[string]any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, k := range drop {
			doc[k] = nil
		}
		if slices.Contains(drop, "rss") {
			doc["images"].(map[string]any)["large"] = nil
		}
		in, _ := json.Marshal(doc)
		var out bytes.Buffer
		if err := Render(&out, "image", bytes.NewReader(in)); err != nil {
			t.Fatalf("without %v: %v", drop, err)
		}
		md := out.String()
		for part, heading := range map[string]string{"room": "## A room of 50", "create": "## `image create`",
			"one": "## One receiver", "rss": "## Receiver memory"} {
			if got, want := strings.Contains(md, heading), !slices.Contains(drop, part); got != want {
				t.Errorf("without %v: section %q present = %v, want %v", drop, heading, got, want)
			}
		}
		if want := !slices.Contains(drop, "rss") && !slices.Contains(drop, "room"); strings.Contains(md, "Where eth0 bytes") != want {
			t.Errorf("without %v: the index-cost bullet present = %v, want %v", drop, !want, want)
		}
		if !strings.Contains(md, "## What limits these numbers") {
			t.Errorf("without %v: the report is cut short", drop)
		}
	}
}
