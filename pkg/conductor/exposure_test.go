package conductor_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// A conductor that would listen beyond the machine with no token does not
// start, unless told Insecure; on loopback, or with a token, it does.
func TestNew_RefusesOpenListenersWithoutToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		cfg        conductor.Config
		refusedFor string // "" if New accepts it
	}{
		{"loopback", conductor.Config{NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"}, ""},
		{"localhost and ::1", conductor.Config{NATSListen: "localhost:0", HTTPListen: "[::1]:0"}, ""},
		{"nats wildcard", conductor.Config{NATSListen: "0.0.0.0:4222"}, "NATS on 0.0.0.0:4222"},
		{"http wildcard", conductor.Config{NATSListen: "127.0.0.1:0", HTTPListen: ":7070"}, "HTTP on :7070"},
		{"both", conductor.Config{NATSListen: "10.0.0.5:4222", HTTPListen: "0.0.0.0:7070"}, "NATS on 10.0.0.5:4222 and HTTP on 0.0.0.0:7070"},
		{"with a token", conductor.Config{NATSListen: "0.0.0.0:4222", HTTPListen: "0.0.0.0:7070", Token: "s3cret"}, ""},
		{"with credentials", conductor.Config{NATSListen: "0.0.0.0:4222", HTTPListen: "0.0.0.0:7070", Credentials: credentialsFile(t)}, ""},
		{"insecure", conductor.Config{NATSListen: "0.0.0.0:4222", HTTPListen: "0.0.0.0:7070", Insecure: true}, ""},
		{"an outside NATS", conductor.Config{NATSURL: "nats://10.0.0.5:4222", HTTPListen: "127.0.0.1:0"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.DataDir = t.TempDir()
			_, err := conductor.New(tc.cfg) // New listens on nothing yet
			if tc.refusedFor == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, "conductor: "+tc.refusedFor+" would listen beyond this machine with no token nor credential: anyone who reaches it could run commands on every host; issue credentials (conductord creds add), set a token (--token-file or CONDUCTOR_TOKEN), listen on 127.0.0.1, or accept it with --insecure")
		})
	}
}

// credentialsFile is a credentials file with one admin credential.
func credentialsFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "credentials.json")
	_, err := auth.Add(path, auth.Credential{ID: "root", Role: auth.Admin}, false)
	require.NoError(t, err)
	return path
}
