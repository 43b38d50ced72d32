// Package imaging is the server side of disk imaging: it takes images
// captured from machines (`mtftpd image capture`, an HTTP PUT of a capture
// stream, docs/image-format.md) into the imaging directory, which lies
// inside the served root, so an image is served by TFTP, HTTP and
// multicast the moment it is renamed into place; and it keeps the
// reimaging tasks (docs/imaging.md): which machine gets the deploy
// environment on its next network boot, and what its agent reports.
//
// It must never let a broken, foreign or unauthorised upload replace an
// image, never write outside its directory, never read an upload's body
// before its token has been checked, never hand a machine the deploy
// environment that no task names, and never let a report change any
// machine but the one whose current attempt's token it carries.
package imaging

import (
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/image"
	"github.com/mtftpd/mtftpd/internal/atomicfile"
	"github.com/mtftpd/mtftpd/internal/loglimit"
)

// DefaultMaxImageSize caps a captured image file (the stored, compressed
// size) when the config does not say.
const DefaultMaxImageSize = 256 << 30

// maxCaptures bounds captures at once: each holds a temp file growing
// toward MaxImageSize and a decoder's CPU.
const maxCaptures = 4

// tempPrefix marks a capture in progress; Sweep removes those a crash
// left behind.
const tempPrefix = ".capture-"

// validName: one path element of letters, digits, '.', '_' and '-', not
// starting with a dot (no hidden files, no "..").
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Server takes captures: PUT <Prefix><name> with "Authorization: Bearer
// <Token>" and a capture stream as the body writes Dir/<name>.
type Server struct {
	// Dir is the imaging directory (absolute).
	Dir string
	// Prefix is the URL path under which Dir is served ("/images/").
	Prefix string
	// Token is the upload token; empty refuses every capture not
	// allowed by TaskToken.
	Token string
	// TaskToken, if set, also lets a capture in whose bearer token it
	// accepts for that name: a capture task's machine, with its current
	// attempt's token, for its task's image only (Manager.CaptureAllowed).
	TaskToken func(name, token string) bool
	// MaxImageSize caps an image file; 0 = DefaultMaxImageSize.
	MaxImageSize int64
	// Log receives one line per capture.
	Log zerolog.Logger

	mu     sync.Mutex
	active map[string]bool  // names being captured
	logs   loglimit.Limiter // refusals: a line per kind per 10 s
}

// CaptureResult is the JSON answer to a successful capture.
type CaptureResult struct {
	Name        string `json:"name"`
	RawSize     uint64 `json:"raw_size"`
	StoredSize  int64  `json:"stored_size"`
	Chunks      uint32 `json:"chunks"`
	ImageDigest string `json:"image_digest"`
}

// Sweep removes the temp files of captures a crash or a kill left behind.
// Call it before serving.
func (s *Server) Sweep() error {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(s.Dir, e.Name())); err == nil {
				s.Log.Info().Str("file", e.Name()).Msg("imaging: removed a capture left unfinished")
			}
		}
	}
	return nil
}

// ServeHTTP takes one capture.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	log := s.Log.With().Str("client", r.RemoteAddr).Str("path", r.URL.Path).Logger()
	if !s.authorised(r, strings.TrimPrefix(r.URL.Path, s.Prefix)) {
		if ok, n := s.logs.Allow("capture-token", time.Now()); ok {
			log.Warn().Uint64("suppressed", n).Msg("imaging: capture refused: no or wrong upload token")
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="mtftpd imaging"`)
		http.Error(w, "capture needs the upload token (imaging.upload_token) or a capture task's token for this name", http.StatusUnauthorized)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, s.Prefix)
	if !ok || !validName.MatchString(name) {
		http.Error(w, fmt.Sprintf("capture name %q: want %s<name> with a name of letters, digits, '.', '_', '-'", r.URL.Path, s.Prefix), http.StatusBadRequest)
		return
	}
	if !s.claim(name) {
		http.Error(w, "too many captures at once, or one of "+name+" is running", http.StatusServiceUnavailable)
		return
	}
	defer s.release(name)
	start := time.Now()
	// A capture that stalls for a minute is cut: it would hold one of
	// the few capture slots for good.
	rc := http.NewResponseController(w)
	body := &deadlineReader{r: r.Body, extend: func() { rc.SetReadDeadline(time.Now().Add(time.Minute)) }}
	res, err := s.capture(name, body)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, image.ErrTooLarge) {
			code = http.StatusRequestEntityTooLarge
		} else if !errors.Is(err, image.ErrCorrupt) && !errors.Is(err, image.ErrTruncated) && !errors.Is(err, image.ErrNotImage) {
			code = http.StatusInternalServerError
		}
		log.Error().Err(err).Str("name", name).Msg("imaging: capture failed; nothing replaced")
		http.Error(w, "capture of "+name+" failed: "+err.Error(), code)
		return
	}
	log.Info().Str("name", name).Uint64("raw_size", res.RawSize).Int64("stored_size", res.StoredSize).Uint32("chunks", res.Chunks).
		Str("image_digest", res.ImageDigest).Dur("duration", time.Since(start)).Msg("imaging: image captured")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(res)
}

func (s *Server) authorised(r *http.Request, name string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	if s.Token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1 {
		return true
	}
	return s.TaskToken != nil && validName.MatchString(name) && s.TaskToken(name, got)
}

func (s *Server) claim(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		s.active = map[string]bool{}
	}
	if s.active[name] || len(s.active) >= maxCaptures {
		return false
	}
	s.active[name] = true
	return true
}

func (s *Server) release(name string) {
	s.mu.Lock()
	delete(s.active, name)
	s.mu.Unlock()
}

// capture reads the stream into a temp file beside the image, which
// ReceiveStream checks chunk by chunk and fsyncs, and renames it into
// place only when all of it checked out; the directory is fsynced so the
// rename survives a power cut.
func (s *Server) capture(name string, body io.Reader) (CaptureResult, error) {
	max := s.MaxImageSize
	if max <= 0 {
		max = DefaultMaxImageSize
	}
	root, err := os.OpenRoot(s.Dir)
	if err != nil {
		return CaptureResult{}, err
	}
	defer root.Close()
	// Images are served by a server that may run as another user.
	f, err := atomicfile.CreateIn(root, name, tempPrefix+name+"-*", 0o644)
	if err != nil {
		return CaptureResult{}, err
	}
	defer f.Abort()
	// The stream may not be longer than the image file it makes plus its
	// own framing (a byte and a digest per chunk): a sender that goes on
	// is cut off here, not only by the image's size check.
	ix, err := image.ReceiveStream(io.LimitReader(body, max+max/16+1<<20), f.File, max)
	if err != nil {
		return CaptureResult{}, err
	}
	if err := f.Commit(); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return CaptureResult{}, err
	}
	return CaptureResult{Name: name, RawSize: ix.Header.RawSize, StoredSize: ix.FileSize(), Chunks: ix.Header.Chunks,
		ImageDigest: hex.EncodeToString(ix.Header.ImageDigest[:])}, nil
}

// deadlineReader moves the request's read deadline on before each read.
type deadlineReader struct {
	r      io.Reader
	extend func()
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.extend()
	return d.r.Read(p)
}
