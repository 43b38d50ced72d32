package config

import (
	"path/filepath"
	"strings"
)

// Imaging configures disk images (docs/image-format.md): where they live
// and who may capture new ones. The directory lies inside the served root,
// so an image is served by TFTP, HTTP and multicast under its path there
// (dir = /srv/tftp/images serves images/<name>).
type Imaging struct {
	Dir          string `toml:"dir" help:"directory of disk images inside tftp.root (and http.root); captures land here; empty disables captures"`
	UploadToken  string `toml:"upload_token" help:"token a capture must present (HTTP Authorization: Bearer); empty refuses every capture"`
	MaxImageSize int64  `toml:"max_image_size" help:"largest image file (compressed, in bytes) a capture may write"`
}

// ImagingPrefix is the path of the imaging dir under root ("images"), the
// name prefix its images are served under.
func ImagingPrefix(root, dir string) (string, bool) {
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(dir))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

func (c *Config) validateImaging(bad func(field, format string, args ...any)) {
	m := c.Imaging
	if m.MaxImageSize < 1<<20 || m.MaxImageSize > 1<<50 {
		bad("imaging.max_image_size", "%d is outside 1 MiB..1 PiB", m.MaxImageSize)
	}
	if m.Dir == "" {
		if m.UploadToken != "" {
			bad("imaging.upload_token", "is set but imaging.dir is not: captures need a directory")
		}
		return
	}
	if !filepath.IsAbs(m.Dir) {
		bad("imaging.dir", "%q is not an absolute path", m.Dir)
		return
	}
	if IsURL(c.TFTP.Root) {
		bad("imaging.dir", "needs a local tftp.root (it is the origin %s)", c.TFTP.Root)
	} else if _, ok := ImagingPrefix(c.TFTP.Root, m.Dir); !ok {
		bad("imaging.dir", "%q is not inside tftp.root %q: images would not be served", m.Dir, c.TFTP.Root)
	}
	if c.HTTP.Root != "" && !IsURL(c.HTTP.Root) {
		if p1, _ := ImagingPrefix(c.TFTP.Root, m.Dir); p1 != "" {
			if p2, ok := ImagingPrefix(c.HTTP.Root, m.Dir); !ok || p2 != p1 {
				bad("imaging.dir", "%q must be at the same path under http.root %q as under tftp.root (%s)", m.Dir, c.HTTP.Root, p1)
			}
		}
	}
	if m.UploadToken != "" {
		if len(m.UploadToken) < 16 {
			bad("imaging.upload_token", "is %d characters: use at least 16 (e.g. openssl rand -hex 16)", len(m.UploadToken))
		}
		if c.HTTP.Listen == "" {
			bad("imaging.upload_token", "captures come by HTTP PUT: set http.listen")
		}
	}
}
