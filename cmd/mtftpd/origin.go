package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/origin"
)

// origins turns roots that are http(s):// URLs into origin caches, one per
// URL, so TFTP and HTTP on the same origin share one copy and one fetch.
type origins struct {
	cfg   config.Origin
	log   zerolog.Logger
	byURL map[string]*origin.Cache
}

// local returns the directory to serve for root and, for an origin, the
// Source that fills it (nil for a plain directory).
func (o *origins) local(root string) (string, filestore.Source, error) {
	if !config.IsURL(root) {
		return root, nil, nil
	}
	if c := o.byURL[root]; c != nil {
		return c.FilesDir(), c, nil
	}
	u, err := url.Parse(root)
	if err != nil {
		return "", nil, err
	}
	ttl := o.cfg.TTL.Duration
	if ttl == 0 {
		ttl = -1 // the config's 0 means every request; the Cache's 0 means its default
	}
	c := &origin.Cache{URL: u, Dir: filepath.Join(o.cfg.CacheDir, cacheDirName(u)), TTL: ttl, Timeout: o.cfg.Timeout.Duration,
		MaxSize: o.cfg.MaxSize, NegativeTTL: o.cfg.NegativeTTL.Duration, Wait: o.cfg.Wait.Duration, Log: o.log}
	// The config's 0 means off; the Cache's 0 means its default.
	if c.MaxSize == 0 {
		c.MaxSize = -1
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = -1
	}
	if err := c.Open(); err != nil {
		return "", nil, err
	}
	if o.byURL == nil {
		o.byURL = make(map[string]*origin.Cache)
	}
	o.byURL[root] = c
	o.log.Info().Str("origin", root).Str("cache", c.Dir).Dur("ttl", o.cfg.TTL.Duration).Msg("serving from an upstream origin")
	return c.FilesDir(), c, nil
}

// Close closes every cache.
func (o *origins) Close() {
	for _, c := range o.byURL {
		c.Close()
	}
}

// cacheDirName names one origin's directory under origin.cache_dir:
// readable (the host) and unique (a hash of the whole URL).
func cacheDirName(u *url.URL) string {
	sum := sha256.Sum256([]byte(u.String()))
	return fmt.Sprintf("%s-%s", strings.NewReplacer(":", "_", "/", "_").Replace(u.Host), hex.EncodeToString(sum[:4]))
}
