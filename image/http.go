package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrImageChanged means the image file on the server is no longer the one
// whose index the receiver holds (its size or ETag changed).
var ErrImageChanged = errors.New("image: the image changed on the server")

// httpRequestMax bounds one Range request: large enough that request
// overhead is negligible at LAN speed, small enough that a retry refetches
// little and parallel requests spread over the file. A variable so that a
// test can make many requests of a small image.
var httpRequestMax int64 = 8 << 20

// httpRetryDelay is the first pause between attempts, doubled each time
// (0.25 + 0.5 + 1 s before giving up). A variable for tests.
var httpRetryDelay = 250 * time.Millisecond

const (
	// httpAttempts is how many times one request is tried before the fetch
	// fails; each retry asks only for the bytes not yet received.
	httpAttempts = 4
	// httpPiece is how much of a response body is read and delivered at once.
	httpPiece = 256 << 10
)

// httpStatusError is an unexpected HTTP status.
type httpStatusError struct {
	url    string
	status string
	code   int
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("image: GET %s: %s", e.url, e.status) }

// retryable says whether a request that failed with err is worth trying
// again: network errors and server-side statuses are; a changed image, a
// writer error, a cancelled context and client-side statuses are not.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, ErrImageChanged) || errors.Is(err, ErrCorrupt) || errors.Is(err, errWholeFile) {
		return false
	}
	var se *httpStatusError
	if errors.As(err, &se) {
		return se.code >= 500 || se.code == http.StatusRequestTimeout || se.code == http.StatusTooManyRequests
	}
	return true
}

// getRange sends GET url with Range: bytes=lo-(hi-1) (and If-Range when
// ifRange is not empty).
func getRange(ctx context.Context, c *http.Client, url string, lo, hi int64, ifRange string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", lo, hi-1))
	req.Header.Set("Accept-Encoding", "identity") // byte offsets are of the file itself
	if ifRange != "" {
		req.Header.Set("If-Range", ifRange)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("image: GET %s bytes %d-%d: %w", url, lo, hi-1, err)
	}
	return resp, nil
}

// contentRange parses "bytes first-last/total" (RFC 9110 §14.4).
func contentRange(s string) (first, last, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	r, t, ok2 := strings.Cut(rest, "/")
	a, b, ok3 := strings.Cut(r, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, 0, fmt.Errorf("image: bad Content-Range %q", s)
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	total, err3 := strconv.ParseInt(t, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || first < 0 || last < first || total <= last {
		return 0, 0, 0, fmt.Errorf("image: bad Content-Range %q (the total size is needed)", s)
	}
	return first, last, total, nil
}

// checkPartial checks a 206 response's Content-Range against the range
// asked for and the size of the image file (want <= 0: not known yet) and
// returns the file's total size.
func checkPartial(resp *http.Response, url string, lo, hi, want int64) (int64, error) {
	first, last, total, err := contentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return 0, err
	}
	if want > 0 && total != want {
		return 0, fmt.Errorf("%w: %s is now %d bytes, the image is %d", ErrImageChanged, url, total, want)
	}
	// Fewer bytes than asked only where the file ends (a header request
	// to a file shorter than a header).
	if first != lo || last > hi-1 || (last < hi-1 && last != total-1) {
		return 0, fmt.Errorf("image: GET %s bytes %d-%d: the server sent bytes %d-%d", url, lo, hi-1, first, last)
	}
	return total, nil
}

// FetchIndexHTTP reads an image's header and index from url: the first
// 4096 bytes, then the index (two Range requests, nothing past the index).
// A server that ignores Range and answers 200 works too: only the prefix of
// its answer is read.
func FetchIndexHTTP(ctx context.Context, c *http.Client, url string) (*Index, error) {
	resp, err := getRange(ctx, c, url, 0, HeaderSize, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		ix, err := ReadIndex(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("image: %s: %w", url, err)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != ix.FileSize() {
			return nil, sizeMismatch(url, resp.ContentLength, ix.FileSize())
		}
		return ix, nil
	case http.StatusPartialContent:
	case http.StatusRequestedRangeNotSatisfiable:
		return nil, &FormatError{Offset: 0, What: url + " is empty", Err: ErrTruncated}
	default:
		return nil, &httpStatusError{url: url, status: resp.Status, code: resp.StatusCode}
	}
	total, err := checkPartial(resp, url, 0, HeaderSize, 0)
	if err != nil {
		return nil, err
	}
	hdr, err := io.ReadAll(io.LimitReader(resp.Body, HeaderSize))
	if err != nil {
		return nil, fmt.Errorf("image: GET %s header: %w", url, err)
	}
	h, err := ParseHeader(hdr)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", url, err)
	}
	if fs := int64(h.DataOffset + h.DataLen); total != fs {
		return nil, sizeMismatch(url, total, fs)
	}
	resp2, err := getRange(ctx, c, url, HeaderSize, int64(h.DataOffset), "")
	if err != nil {
		return nil, err
	}
	defer resp2.Body.Close()
	var rest io.Reader
	switch resp2.StatusCode {
	case http.StatusOK: // Range honoured once, then not: read the prefix of the whole file
		rest = resp2.Body
		hdr = nil
	case http.StatusPartialContent:
		if _, err := checkPartial(resp2, url, HeaderSize, int64(h.DataOffset), total); err != nil {
			return nil, err
		}
		rest = io.LimitReader(resp2.Body, int64(h.DataOffset)-HeaderSize)
	default:
		return nil, &httpStatusError{url: url, status: resp2.Status, code: resp2.StatusCode}
	}
	ix, err := ReadIndex(io.MultiReader(bytes.NewReader(hdr), rest))
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", url, err)
	}
	if ix.Header.ImageDigest != h.ImageDigest || ix.Header.IndexDigest != h.IndexDigest {
		return nil, fmt.Errorf("%w: %s: the header changed between two requests", ErrImageChanged, url)
	}
	return ix, nil
}

func sizeMismatch(url string, have, want int64) error {
	sentinel := ErrTruncated
	if have > want {
		sentinel = ErrCorrupt
	}
	return &FormatError{Offset: min(have, want), What: fmt.Sprintf("%s is %d bytes, its header says %d", url, have, want), Err: sentinel}
}

// FetchHTTP fetches the stored bytes of the needed chunks (every data
// chunk if need is nil) from url with Range requests of up to 8 MiB of
// adjacent chunks, parallel at a time (4 if <= 0), and puts each chunk
// into w as soon as its bytes are in. A failed request is retried a few
// times for its missing bytes only. It fails with ErrImageChanged when the
// server's file is no longer this image (another size, or another ETag).
// A server that ignores Range gets one plain GET whose bytes outside the
// needed chunks are skipped.
//
// Memory: one read buffer per request in flight plus the chunks being
// assembled; w bounds the rest. FetchHTTP does not close w.
func FetchHTTP(ctx context.Context, c *http.Client, url string, ix *Index, need []bool, w *ChunkWriter, parallel int) error {
	if parallel <= 0 {
		parallel = 4
	}
	asm := NewAssembler(ix, need, w)
	reqs := asm.requests(httpRequestMax)
	if len(reqs) == 0 {
		return nil
	}
	f := &httpFetch{ctx: ctx, c: c, url: url, ix: ix, asm: asm}
	// The first request alone learns whether the server honours Range and
	// the file's ETag; the others then ask If-Range against it.
	buf := make([]byte, httpPiece)
	if err := f.fetch(reqs[0], buf, true); err != nil {
		if errors.Is(err, errWholeFile) {
			return f.checkDone()
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.ctx = ctx
	var (
		mu       sync.Mutex
		next     = 1
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(parallel, len(reqs)-1) {
		wg.Go(func() {
			buf := make([]byte, httpPiece)
			for {
				mu.Lock()
				if next >= len(reqs) || firstErr != nil {
					mu.Unlock()
					return
				}
				r := reqs[next]
				next++
				mu.Unlock()
				if err := f.fetch(r, buf, false); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return f.checkDone()
}

// errWholeFile: the probe got the whole file (no Range support) and
// delivered all of it.
var errWholeFile = errors.New("image: whole file delivered")

type httpFetch struct {
	ctx  context.Context
	c    *http.Client
	url  string
	ix   *Index
	asm  *Assembler
	etag string // strong ETag of the file, for If-Range
}

func (f *httpFetch) checkDone() error {
	if err := f.asm.w.Err(); err != nil {
		return err
	}
	if m := f.asm.Missing(); m > 0 {
		return fmt.Errorf("image: %s: %d needed chunks not received", f.url, m)
	}
	return nil
}

// fetch gets r, retrying for the bytes not yet received.
func (f *httpFetch) fetch(r Range, buf []byte, probe bool) error {
	off, end := r.Off, r.Off+r.Len
	var err error
	for attempt := range httpAttempts {
		if attempt > 0 {
			t := time.NewTimer(httpRetryDelay << (attempt - 1))
			select {
			case <-f.ctx.Done():
				t.Stop()
				return f.ctx.Err()
			case <-t.C:
			}
		}
		var n int64
		n, err = f.get(off, end, buf, probe)
		off += n
		if err == nil || !retryable(f.ctx, err) {
			return err
		}
		if w := f.asm.w.Err(); w != nil {
			return w
		}
	}
	return fmt.Errorf("image: %s bytes %d-%d: %d attempts failed: %w", f.url, r.Off, end-1, httpAttempts, err)
}

// get requests [off,end) once and delivers what arrives; it returns the
// number of bytes delivered.
func (f *httpFetch) get(off, end int64, buf []byte, probe bool) (int64, error) {
	resp, err := getRange(f.ctx, f.c, f.url, off, end, f.etag)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	size := f.ix.FileSize()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if _, err := checkPartial(resp, f.url, off, end, size); err != nil {
			return 0, err
		}
		if probe {
			if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
				f.etag = et
			}
		}
		return f.deliver(resp.Body, off, end, buf)
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			return 0, fmt.Errorf("%w: %s is now %d bytes, the image is %d", ErrImageChanged, f.url, resp.ContentLength, size)
		}
		if f.etag != "" {
			return 0, fmt.Errorf("%w: %s no longer has ETag %s", ErrImageChanged, f.url, f.etag)
		}
		if !probe {
			return 0, fmt.Errorf("image: GET %s: the server ignored the Range header it honoured before", f.url)
		}
		// No Range support: the whole file, once, through the assembler.
		if _, err := f.deliver(resp.Body, 0, size, buf); err != nil {
			return 0, err // a retry starts again at byte 0
		}
		return 0, errWholeFile
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, fmt.Errorf("%w: %s: bytes %d-%d are past its end now", ErrImageChanged, f.url, off, end-1)
	}
	return 0, &httpStatusError{url: f.url, status: resp.Status, code: resp.StatusCode}
}

// deliver reads body, the file's bytes from off, up to end, into the
// assembler, httpPiece at a time.
func (f *httpFetch) deliver(body io.Reader, off, end int64, buf []byte) (int64, error) {
	start := off
	for off < end {
		k, err := io.ReadFull(body, buf[:min(int64(len(buf)), end-off)])
		if k > 0 {
			if derr := f.asm.Deliver(off, buf[:k]); derr != nil {
				return off - start, derr
			}
			off += int64(k)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("image: GET %s: body ended at byte %d of %d-%d", f.url, off, start, end-1)
			}
			return off - start, err
		}
	}
	return off - start, nil
}
