package bench

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/report-*.md from the templates")

// TestRenderGolden renders each testdata/report-KIND.json and compares
// the markdown with testdata/report-KIND.md (go test ./bench -run
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
