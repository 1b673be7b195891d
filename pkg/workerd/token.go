package workerd

import (
	"errors"

	"github.com/conductor-run/conductor/internal/secret"
)

// token returns the token Run presents: Token, or the content of
// TokenFile, read now. A file that group or other users may read is
// used, with a warning in the log.
func (c Config) token() (string, error) {
	if c.TokenFile == "" {
		return c.Token, nil
	}
	if c.Token != "" {
		return "", errors.New("token: give a token or a token file, not both")
	}
	tok, shared, err := secret.ReadTokenFile(c.TokenFile)
	if err != nil {
		return "", err
	}
	if shared {
		c.Logger.Warn("the token file may be read by other users of this host: chmod 600 it", "file", c.TokenFile)
	}
	return tok, nil
}
