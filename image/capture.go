package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// CaptureContentType is the media type of a capture stream.
const CaptureContentType = "application/x-mtftpd-capture"

// Capture images src and streams it to url (the image's URL on an mtftpd
// mirror, e.g. http://192.0.2.1/images/room.img) as an HTTP PUT with the
// upload token: the capture stream of docs/image-format.md, made as it is
// sent — nothing is staged on the capturing machine, which runs from RAM.
// The server checks every chunk and the image digest and renames the image
// into place only then; its answer (JSON) is returned as is.
func Capture(ctx context.Context, c *http.Client, src Source, url, token string, meta Meta, opts CreateOptions) (*Index, string, error) {
	if c == nil {
		c = http.DefaultClient
	}
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, pr)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", CaptureContentType)
	type made struct {
		ix  *Index
		err error
	}
	done := make(chan made, 1)
	go func() {
		ix, err := func() (*Index, error) {
			sw, err := NewStreamWriter(pw, src.Size(), opts.chunkSize(), meta)
			if err != nil {
				return nil, err
			}
			if err := Create(ctx, src, sw, opts); err != nil {
				return nil, err
			}
			return sw.Finish()
		}()
		pw.CloseWithError(err) // nil: the body ends
		done <- made{ix, err}
	}()
	resp, err := c.Do(req)
	if err != nil {
		pr.CloseWithError(err) // stops Create
		m := <-done
		if m.err != nil && !errors.Is(m.err, err) {
			return nil, "", fmt.Errorf("image: capture to %s: %w (imaging: %v)", url, err, m.err)
		}
		return nil, "", fmt.Errorf("image: capture to %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	pr.CloseWithError(errors.New("image: the server answered")) // a refusal before the end stops Create
	m := <-done
	if resp.StatusCode != http.StatusCreated {
		return nil, "", fmt.Errorf("image: capture to %s refused: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if m.err != nil {
		return nil, "", fmt.Errorf("image: capture to %s: %w", url, m.err)
	}
	return m.ix, string(body), nil
}
