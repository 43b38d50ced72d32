// Package privdrop turns a process that started as root (to bind ports 67,
// 69 and 4011) into an unprivileged user once its sockets are open. It
// never opens sockets and never changes anything but the process's
// credentials.
package privdrop

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
)

// Identity is who the process becomes.
type Identity struct {
	User   string // name, as in the config
	UID    int
	GID    int
	Groups []int // supplementary groups (the user's, from /etc/group)
}

// ErrUnsupported is returned where credentials cannot be dropped for every
// thread of a Go process.
var ErrUnsupported = errors.New("privdrop: dropping privileges is supported on Linux only")

// Lookup resolves a user name (or numeric uid) and an optional group name
// (or gid; "" = the user's primary group) to an Identity.
func Lookup(name, group string) (Identity, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
		if err != nil {
			return Identity{}, fmt.Errorf("user %q: %w", name, err)
		}
	}
	id := Identity{User: u.Username}
	id.UID, _ = strconv.Atoi(u.Uid)
	id.GID, _ = strconv.Atoi(u.Gid)
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if _, nerr := strconv.Atoi(group); nerr == nil {
				g, err = user.LookupGroupId(group)
			}
			if err != nil {
				return Identity{}, fmt.Errorf("group %q: %w", group, err)
			}
		}
		id.GID, _ = strconv.Atoi(g.Gid)
	}
	gids, _ := u.GroupIds() // none listed is fine: the primary group stays
	seen := map[int]bool{id.GID: true}
	id.Groups = []int{id.GID}
	for _, s := range gids {
		if g, err := strconv.Atoi(s); err == nil && !seen[g] {
			seen[g] = true
			id.Groups = append(id.Groups, g)
		}
	}
	return id, nil
}
