package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// qemuNBD is the qemu-nbd binary; a variable so tests can break it.
var qemuNBD = "qemu-nbd"

type qemuInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

// qemuImgInfo runs `qemu-img info --output=json` on path (absolute, so a
// name like "json:{...}" cannot be taken for a qemu pseudo-protocol).
func qemuImgInfo(ctx context.Context, path string) (qemuInfo, error) {
	var info qemuInfo
	abs, err := filepath.Abs(path)
	if err != nil {
		return info, fmt.Errorf("image: %w", err)
	}
	out, err := runTool(ctx, qemuImg, "info", "--output=json", abs)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return info, fmt.Errorf("image: parsing qemu-img info for %s: %w", path, err)
	}
	if info.Format == "" {
		return info, fmt.Errorf("image: qemu-img info for %s names no format", path)
	}
	return info, nil
}

// runTool runs a command and returns its stdout; a failure carries the
// last line of its stderr.
func runTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, max: 4096}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("image: %s %s: %w: %s", name, strings.Join(args, " "), err, lastLine(stderr.String()))
	}
	return out, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// qemuMapEntry is one element of `qemu-img map --output=json`.
type qemuMapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

// qemuExtents lists the ranges qemu-img map says hold data ("data": true,
// "zero": false); the rest reads as zeros and becomes holes unread.
func qemuExtents(ctx context.Context, abs, format string, size int64) ([]Extent, error) {
	out, err := runTool(ctx, qemuImg, "map", "--format="+format, "--output=json", abs)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return nil, fmt.Errorf("image: qemu-img map for %s: not a JSON array", abs)
	}
	var ext []Extent
	var pos int64
	for dec.More() {
		var e qemuMapEntry
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("image: qemu-img map for %s: %w", abs, err)
		}
		if e.Start < pos || e.Length <= 0 || e.Start > size || e.Length > size-e.Start {
			return nil, fmt.Errorf("image: qemu-img map for %s: extent %d+%d out of order or outside %d bytes", abs, e.Start, e.Length, size)
		}
		pos = e.Start + e.Length
		if !e.Data || e.Zero {
			continue
		}
		if n := len(ext); n > 0 && ext[n-1].Off+ext[n-1].Len == e.Start {
			ext[n-1].Len += e.Length
			continue
		}
		ext = append(ext, Extent{e.Start, e.Length})
	}
	return ext, nil
}

// qemuSource reads a disk image in a format qemu understands by serving it
// with qemu-nbd on a private Unix socket and reading it with nbdClient.
// There is no temporary raw copy.
type qemuSource struct {
	format  string
	size    int64
	extents []Extent
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	stderr  bytes.Buffer
	conn    net.Conn

	mu  sync.Mutex // serialises requests on the one connection
	nbd *nbdClient
}

// nbdStartTimeout bounds the wait for qemu-nbd's socket: it usually takes
// tens of milliseconds.
const nbdStartTimeout = 30 * time.Second

func openQemu(ctx context.Context, path string, info qemuInfo) (_ *qemuSource, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if info.VirtualSize <= 0 {
		return nil, fmt.Errorf("image: %s: %s image of virtual size %d", path, info.Format, info.VirtualSize)
	}
	// The map is taken before qemu-nbd opens the image, so the two never
	// contend for qemu's image lock.
	extents, err := qemuExtents(ctx, abs, info.Format, info.VirtualSize)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mtftpd-nbd-")
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	s := &qemuSource{format: info.Format, size: info.VirtualSize, extents: extents, dir: dir, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	sock := filepath.Join(dir, "nbd.sock")
	// Without --persistent qemu-nbd exits when our one connection closes.
	s.cmd = exec.Command(qemuNBD, "--read-only", "--format="+info.Format, "--socket="+sock, "--shared=1", abs)
	s.cmd.Stderr = &limitedBuffer{b: &s.stderr, max: 4096}
	setChildDeath(s.cmd)
	if err := s.cmd.Start(); err != nil {
		close(s.exited)
		return nil, fmt.Errorf("image: starting qemu-nbd (Debian: apt-get install qemu-utils): %w", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.NewTimer(nbdStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.conn == nil {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("image: qemu-nbd for %s exited: %s", path, lastLine(s.stderr.String()))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("image: qemu-nbd for %s did not open its socket in %v", path, nbdStartTimeout)
		case <-tick.C:
			if c, err := net.Dial("unix", sock); err == nil {
				s.conn = c
			}
		}
	}
	s.conn.SetDeadline(time.Now().Add(nbdStartTimeout))
	if s.nbd, err = nbdHandshake(s.conn); err != nil {
		return nil, fmt.Errorf("image: %s via qemu-nbd: %w", path, err)
	}
	s.conn.SetDeadline(time.Time{})
	if int64(s.nbd.size) != s.size {
		return nil, fmt.Errorf("image: %s: qemu-nbd exports %d bytes, qemu-img info says %d", path, s.nbd.size, s.size)
	}
	return s, nil
}

// nbdReadTimeout bounds one read request: a local qemu-nbd answers in
// milliseconds unless the disk under it hangs.
const nbdReadTimeout = 2 * time.Minute

func (s *qemuSource) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nbd == nil {
		return 0, errSourceClosed
	}
	s.conn.SetDeadline(time.Now().Add(nbdReadTimeout))
	return s.nbd.ReadAt(p, off)
}

func (s *qemuSource) Size() int64 { return s.size }

func (s *qemuSource) Extents(context.Context) ([]Extent, error) { return s.extents, nil }

// Close disconnects, waits for qemu-nbd to exit (killing it after a few
// seconds) and removes the socket directory.
func (s *qemuSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nbd != nil {
		s.conn.SetDeadline(time.Now().Add(time.Second))
		s.nbd.disconnect()
		s.nbd = nil
	}
	if s.conn != nil {
		s.conn.Close()
	}
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
			err = errors.New("image: qemu-nbd did not exit after the disconnect; killed")
		}
	}
	os.RemoveAll(s.dir)
	return err
}

var _ io.ReaderAt = (*qemuSource)(nil)
