package ra

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// openIface opens one interface's socket: bound to the unspecified address
// (the link-local one may still be tentative at start), in the all-routers
// group to hear solicitations, passing only solicitations and
// advertisements, with the arrival interface and hop limit of each.
func openIface(ifi net.Interface) (*Iface, error) {
	c, _, err := ndp.Listen(&ifi, ndp.Unspecified)
	if err != nil {
		return nil, fmt.Errorf("ra: interface %q (index %d): %w", ifi.Name, ifi.Index, err)
	}
	var filter ipv6.ICMPFilter
	filter.SetAll(true)
	filter.Accept(ipv6.ICMPTypeRouterSolicitation)
	filter.Accept(ipv6.ICMPTypeRouterAdvertisement)
	err = errors.Join(c.JoinGroup(allRouters), c.SetICMPFilter(&filter),
		c.SetControlMessage(ipv6.FlagInterface|ipv6.FlagHopLimit, true))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("ra: interface %q (index %d): %w", ifi.Name, ifi.Index, err)
	}
	index := ifi.Index
	return &Iface{Name: ifi.Name, Index: index, MAC: ifi.HardwareAddr, Conn: c, Own: func(a netip.Addr) bool {
		return ownAddr(index, a)
	}}, nil
}

// ownAddr reports whether a is an address of interface index now.
func ownAddr(index int, a netip.Addr) bool {
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return false
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	a = a.WithZone("")
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}
