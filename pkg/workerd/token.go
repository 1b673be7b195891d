package workerd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTokenFile bounds a token file: a token is a line, not a document.
const maxTokenFile = 64 << 10

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
	f, err := os.Open(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s: not a regular file", c.TokenFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if len(data) > maxTokenFile {
		return "", fmt.Errorf("token file %s: more than %d bytes; a token is one line", c.TokenFile, maxTokenFile)
	}
	tok := strings.TrimRight(string(data), "\r\n")
	if tok == "" {
		return "", fmt.Errorf("token file %s: empty", c.TokenFile)
	}
	if strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("token file %s: more than one line; a token is one line", c.TokenFile)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		c.Logger.Warn("the token file may be read by other users of this host: chmod 600 it",
			"file", c.TokenFile, "mode", fmt.Sprintf("%#o", perm))
	}
	return tok, nil
}
