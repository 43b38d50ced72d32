package tftp

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"time"
)

// DefaultWriteQuota is the most the write directory may hold when
// Server.WriteQuota is 0: four uploads of the largest default size
// (MaxUploadSize 1 GiB).
const DefaultWriteQuota = 4 << 30

// errQuota ends an upload that would take the write directory past its
// quota (ERROR 3, disk full).
var errQuota = errors.New("upload quota of the write directory exceeded")

// quotaRescan is how often at most the write directory is measured again
// when an upload hits the quota: files an admin removed meanwhile give
// their room back without a restart.
const quotaRescan = 10 * time.Second

// uploadQuota bounds the bytes in the write directory (issue 13, finding
// 11): the files in it (measured at start and again at most every
// quotaRescan when the quota is hit, then counted as uploads commit) plus
// what running uploads have written. Safe for concurrent use.
type uploadQuota struct {
	mu       sync.Mutex
	limit    int64 // <= 0: none
	stored   int64 // bytes of the files in the directory
	inflight int64 // bytes written by running uploads, not committed yet
	measured time.Time
	measure  func() int64 // the files' size now; nil = never measured again
}

func (q *uploadQuota) setLimit(limit int64) {
	q.mu.Lock()
	q.limit = limit
	q.mu.Unlock()
}

// room is what an upload may still write (-1: no quota).
func (q *uploadQuota) room() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.limit <= 0 {
		return -1
	}
	return max(q.limit-q.stored-q.inflight, 0)
}

// take reserves n bytes for a running upload, or reports false when they
// would pass the quota.
func (q *uploadQuota) take(n int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.limit <= 0 {
		q.inflight += n
		return true
	}
	if q.stored+q.inflight+n > q.limit && q.measure != nil && time.Since(q.measured) >= quotaRescan {
		q.stored, q.measured = q.measure(), time.Now()
	}
	if q.stored+q.inflight+n > q.limit {
		return false
	}
	q.inflight += n
	return true
}

// give returns what an aborted upload reserved.
func (q *uploadQuota) give(n int64) {
	q.mu.Lock()
	q.inflight -= n
	q.mu.Unlock()
}

// commit turns an upload's n bytes into a stored file that replaced a
// file of replaced bytes (0: none).
func (q *uploadQuota) commit(n, replaced int64) {
	q.mu.Lock()
	q.inflight -= n
	q.stored += n - replaced
	q.mu.Unlock()
}

// isUploadTemp reports whether base is the name of an upload's temp file:
// "." + target name + ".part-" + 12 hex digits (newUpload).
func isUploadTemp(base string) bool {
	i := strings.LastIndex(base, ".part-")
	if !strings.HasPrefix(base, ".") || i < 1 || len(base)-i-len(".part-") != 12 {
		return false
	}
	for _, c := range base[i+len(".part-"):] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// scanWriteDir walks the write directory: it returns the bytes of its
// regular files and, with sweep, removes the upload temp files it finds
// (left by a crash: a running server renames or removes its own), counting
// them in removed. Symlinks are neither followed nor counted; unreadable
// directories are skipped.
func scanWriteDir(root *os.Root, sweep bool) (stored int64, removed int) {
	fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if isUploadTemp(path.Base(p)) {
			if sweep && root.Remove(p) == nil {
				removed++
			}
			return nil
		}
		if fi, err := d.Info(); err == nil {
			stored += fi.Size()
		}
		return nil
	})
	return stored, removed
}
