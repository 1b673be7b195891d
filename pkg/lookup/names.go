package lookup

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds of names and keys.
const (
	MaxName = 64
	MaxKey  = 256
)

// ErrInvalid is wrapped by the errors of a name, key or value refused.
var ErrInvalid = errors.New("lookup: invalid")

// checkName reports why name is not a lookup's name, if it is not.
func checkName(name string) error {
	if name == "" || len(name) > MaxName {
		return fmt.Errorf("%w name %.80q: 1 to %d characters", ErrInvalid, name, MaxName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w name %.80q: letters, digits, '-' and '_' only", ErrInvalid, name)
		}
	}
	return nil
}

// checkKey reports why key is not a lookup's key, if it is not.
func checkKey(key string) error {
	if key == "" || len(key) > MaxKey {
		return fmt.Errorf("%w key %.80q: 1 to %d bytes", ErrInvalid, key, MaxKey)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w key %.80q: not UTF-8", ErrInvalid, key)
	}
	// A key is the rest of an HTTP path (/v1/lookups/{name}/{key}), which
	// a server cleans: one with an empty, "." or ".." segment between
	// slashes could be stored and never reached there.
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w key %.80q: no empty, \".\" or \"..\" part between slashes", ErrInvalid, key)
		}
	}
	return nil
}

// encodedMark starts a key stored encoded; it is no character a key the
// bucket takes as it is can start with here (see plain).
const encodedMark = "="

// storedKey is the bucket's key of key in lookup name: "<name>.<key>",
// key as it is if the bucket takes it so, else encoded (base64url after
// encodedMark).
func storedKey(name, key string) string {
	if plain(key) {
		return name + "." + key
	}
	return name + "." + encodedMark + base64.RawURLEncoding.EncodeToString([]byte(key))
}

// plain reports whether the bucket takes key as it is: letters, digits,
// '-', '_' and '/', and dots between other characters, not starting with
// encodedMark.
func plain(key string) bool {
	if key == "" || strings.HasPrefix(key, encodedMark) || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return false
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/' || c == '.') {
			return false
		}
	}
	return true
}

// splitKey returns the lookup name and key of a bucket's key; ok false if
// it is none of storedKey's.
func splitKey(stored string) (name, key string, ok bool) {
	name, enc, ok := strings.Cut(stored, ".")
	if !ok || checkName(name) != nil || enc == "" {
		return "", "", false
	}
	key = enc
	if b, found := strings.CutPrefix(enc, encodedMark); found {
		raw, err := base64.RawURLEncoding.DecodeString(b)
		if err != nil {
			return "", "", false
		}
		key = string(raw)
	}
	// Only the one bucket key storedKey makes of it: another spelling of
	// the same key (base64 is not canonical), written past the store,
	// would list as a key Get does not read.
	if checkKey(key) != nil || storedKey(name, key) != stored {
		return "", "", false
	}
	return name, key, true
}
