// Package secret reads the secrets conductor's binaries are given in files
// (--token-file), so that they stay out of process listings.
package secret

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxFile bounds a token file: a token is a line, not a document.
const maxFile = 64 << 10

// ReadTokenFile returns the token in the file at path: its one line, the
// trailing newline trimmed. shared reports whether users other than the
// file's owner may read it, for the caller to warn about.
func ReadTokenFile(path string) (token string, shared bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", false, fmt.Errorf("token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", false, fmt.Errorf("token file %s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return "", false, fmt.Errorf("token file: %w", err)
	}
	if len(data) > maxFile {
		return "", false, fmt.Errorf("token file %s: more than %d bytes; a token is one line", path, maxFile)
	}
	tok := strings.TrimRight(string(data), "\r\n")
	if tok == "" {
		return "", false, fmt.Errorf("token file %s: empty", path)
	}
	if strings.ContainsAny(tok, "\r\n") {
		return "", false, fmt.Errorf("token file %s: more than one line; a token is one line", path)
	}
	return tok, fi.Mode().Perm()&0o077 != 0, nil
}
