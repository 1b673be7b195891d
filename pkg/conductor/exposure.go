package conductor

import (
	"fmt"
	"net"
	"strings"
)

// checkExposure refuses a conductor that would listen beyond this machine
// while open (no token, no credential), unless Config.Insecure says so: by
// default, only programs on the machine reach a conductor nobody set a
// secret for (docs/security.md, "Safe by default").
func (c Config) checkExposure(unguarded bool) error {
	if !unguarded || c.Insecure {
		return nil
	}
	var open []string
	if c.NATSURL == "" && !loopback(c.NATSListen) {
		open = append(open, "NATS on "+c.NATSListen)
	}
	if c.HTTPListen != "" && !loopback(c.HTTPListen) {
		open = append(open, "HTTP on "+c.HTTPListen)
	}
	if len(open) == 0 {
		return nil
	}
	return fmt.Errorf("conductor: %s would listen beyond this machine with no token nor credential: anyone who reaches it could run commands on every host; issue credentials (conductord creds add), set a token (--token-file or CONDUCTOR_TOKEN), listen on 127.0.0.1, or accept it with --insecure", strings.Join(open, " and "))
}

// loopback reports whether the listen address addr (HOST:PORT) is reached
// from this machine only: localhost or a loopback IP. An empty host, a
// wildcard, or any other name or address is not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
