package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeLoopbackPort returns a loopback port (network "tcp" or "udp") that
// was free a moment ago, for a server the test starts in another process.
// It is drawn below the kernel's ephemeral range: the server binds it only
// after this check, and a port of that range can meanwhile go to any
// socket bound to port 0 or connecting out (a CI run failed so, a worker's
// "bind: address already in use"), where one below it goes only to a
// process that asks for it by number.
func FreeLoopbackPort(t testing.TB, network string) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				lo = v
			}
		}
	}
	const base = 10000
	for range 100 {
		p := 0 // a range starting below base leaves only the kernel's choice
		if lo > base {
			p = base + rand.IntN(lo-base)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		if network == "udp" {
			c, err := net.ListenPacket("udp", addr)
			if err == nil {
				defer c.Close()
				return c.LocalAddr().(*net.UDPAddr).Port
			}
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err == nil {
			defer l.Close()
			return l.Addr().(*net.TCPAddr).Port
		}
	}
	t.Fatalf("no free loopback %s port below %d in 100 tries", network, lo)
	return 0
}
