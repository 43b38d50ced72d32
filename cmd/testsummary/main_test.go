package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sample is a package whose tests pass, fail (with a subtest and a log
// line to show in full), and skip for each reason class.
const sample = `package sample

import (
	"fmt"
	"testing"
)

func TestPass(t *testing.T) { t.Log("quiet when passing") }

func TestFail(t *testing.T) {
	t.Run("sub", func(t *testing.T) {
		fmt.Println("stdout of the failing subtest")
		t.Log("a log line of the failing subtest")
		t.Error("the failure")
	})
}

func TestRoot(t *testing.T)  { t.Skip("netlab: not root") }
func TestQEMU(t *testing.T)  { t.Skip("needs root: loop devices and mount") }
func TestPkg(t *testing.T)   { t.Skip("curl not installed (make test installs it)") }
func TestSlow(t *testing.T)  { t.Log("setting up"); t.Skip("a slow firmware run: make e2e-slow (MTFTPD_E2E_SLOW=1) runs it") }
func TestOther(t *testing.T) { t.Skipf("no IPv6 loopback: %v", "EADDRNOTAVAIL") }
`

// goTestJSON runs `go test -json` on a package made of files and
// returns the stream.
func goTestJSON(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	files["go.mod"] = "module example.com/sample\n\ngo 1.22\n"
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "test", "-json", "-count=1", "-shuffle=on", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	out, err := cmd.Output()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return out
}

func run(t *testing.T, stream []byte, root bool) (string, bool) {
	t.Helper()
	var b bytes.Buffer
	s := newSummary(&b, root)
	if err := s.read(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	ok := s.finish()
	return b.String(), ok
}

func TestSummary(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("go not in PATH: the test runs go test -json")
	}
	stream := goTestJSON(t, map[string]string{"sample_test.go": sample})

	out, ok := run(t, stream, false)
	if ok {
		t.Errorf("a run with a failing test succeeded:\n%s", out)
	}
	for _, want := range []string{
		// The failing test's output, in full.
		"stdout of the failing subtest",
		"a log line of the failing subtest",
		"the failure",
		"--- FAIL: TestFail/sub",
		"--- FAIL: TestFail ",
		"FAIL\texample.com/sample",
		"-test.shuffle ", // the seed, to run the order again
		"=== Summary: 1 passed, 2 failed, 5 skipped",
		"Skipped, needs root (the network lab, QEMU, mounts, privileges): 2\n",
		"  example.com/sample TestQEMU\n      sample_test.go:19: needs root: loop devices and mount\n  example.com/sample TestRoot\n      sample_test.go:18: netlab: not root\n",
		"TestQEMU\n      sample_test.go:19: needs root: loop devices and mount",
		"Skipped, needs a package (scripts/test-deps.sh installs it as root): 1\n",
		"TestPkg\n      sample_test.go:20: curl not installed",
		"Skipped, slow, run by make e2e-slow: 1\n",
		"TestSlow\n      sample_test.go:21: a slow firmware run",
		"Skipped, other: 1\n",
		"TestOther\n      sample_test.go:22: no IPv6 loopback: EADDRNOTAVAIL",
		"Failed:\n  example.com/sample TestFail/sub\n  example.com/sample TestFail\n  example.com/sample (package)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"quiet when passing", "=== RUN", "setting up", "NOT ALLOWED"} {
		if strings.Contains(out, not) {
			t.Errorf("output has %q:\n%s", not, out)
		}
	}

	// As root the same skips of root and package tests fail the run; the
	// slow and other skips do not.
	passing := strings.Replace(sample, `t.Error("the failure")`, `_ = 0`, 1)
	stream = goTestJSON(t, map[string]string{"sample_test.go": passing})
	out, ok = run(t, stream, false)
	if !ok || !strings.Contains(out, "ok  \texample.com/sample\t") || strings.Contains(out, "stdout of the failing subtest") {
		t.Errorf("passing run, not root: ok=%v\n%s", ok, out)
	}
	out, ok = run(t, stream, true)
	if ok || !strings.Contains(out, "FAIL: 3 tests that need root or a package skipped although running as root") ||
		!strings.Contains(out, "needs root (the network lab, QEMU, mounts, privileges): 2 — NOT ALLOWED as root") {
		t.Errorf("passing run as root with root skips: ok=%v\n%s", ok, out)
	}
	onlySlow := strings.NewReplacer(`t.Skip("netlab: not root")`, ``, `t.Skip("needs root: loop devices and mount")`, ``,
		`t.Skip("curl not installed (make test installs it)")`, ``).Replace(passing)
	out, ok = run(t, goTestJSON(t, map[string]string{"sample_test.go": onlySlow}), true)
	if !ok || !strings.Contains(out, "slow, run by make e2e-slow: 1") {
		t.Errorf("as root with only slow and other skips: ok=%v\n%s", ok, out)
	}
}

// A package that does not build, and one whose binary panics outside a
// test's goroutine, fail with their output shown.
func TestSummaryBrokenPackages(t *testing.T) {
	stream := goTestJSON(t, map[string]string{"x_test.go": "package sample\n\nfunc broken( {}\n"})
	out, ok := run(t, stream, false)
	if ok || !strings.Contains(out, "x_test.go:3") || !strings.Contains(out, "example.com/sample (package)") {
		t.Errorf("build failure: ok=%v\n%s", ok, out)
	}
	stream = goTestJSON(t, map[string]string{"x_test.go": `package sample

import "testing"

func TestDies(t *testing.T) {
	done := make(chan bool)
	go func() { panic("boom outside the test") }()
	<-done
}
`})
	out, ok = run(t, stream, false)
	if ok || !strings.Contains(out, "panic: boom outside the test") || !strings.Contains(out, "TestDies") {
		t.Errorf("panic: ok=%v\n%s", ok, out)
	}
}

func TestClassify(t *testing.T) {
	for reason, want := range map[string]class{
		"netns_linux_test.go:25: needs root for network namespaces":                             classRoot,
		"netlab.go:88: netlab: not root":                                                        classRoot,
		"filestore_linux_test.go:18: cannot create a device node here (needs root/CAP_MKNOD)":   classRoot,
		"harness_test.go:297: qemu-system-x86_64 not installed and not root":                    classPackage,
		"lab_faults_test.go:64: iptables not found (Debian package iptables): no delay":         classPackage,
		"tftp_lab_test.go:41: in.tftpd not found at x: scripts/test-deps.sh unpacks it":         classPackage,
		"localboot_test.go:193: a slow firmware run: make e2e-slow (MTFTPD_E2E_SLOW=1) runs it": classSlow,
		"privdrop_test.go:12: no root user in the user database: x":                             classOther,
		"target_linux_test.go:251: root source /dev/x is not a device node here: x":             classOther,
		"udpio_linux_test.go:79: no IPv6 loopback: x":                                           classOther,
	} {
		if got := classify(reason); got != want {
			t.Errorf("classify(%q) = %v, want %v", reason, got, want)
		}
	}
}
