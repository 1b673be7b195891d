package hostsvc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/conductor-run/conductor/internal/wire"
)

// head is what the store checks of a job's state.
type head struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Status string `json:"status"`
}

// readHead reads the head of a job's state, data: a JSON object whose
// keys are each there once. A key twice, or twice but for case ("type"
// and "Type"), is refused: Go's decoder, conductord's and every Go
// reader's, takes the last of keys equal but for case, while a
// case-sensitive reader takes another, so that such a state would read
// as one type to the store's check and another to someone else.
func readHead(data []byte) (head, error) {
	var h head
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("not a job's state: %w", err)
	}
	if data = bytes.TrimSpace(data); len(data) == 0 || data[0] != '{' {
		return h, fmt.Errorf("not a job's state: not a JSON object")
	}
	k, n := repeatedKey(data)
	if n > maxStateKeys {
		return h, fmt.Errorf("not a job's state: more than %d keys: refused", maxStateKeys)
	}
	if k != "" {
		return h, fmt.Errorf("not a job's state: key %q twice (or twice but for case): refused", k)
	}
	return h, nil
}

// maxStateKeys bounds the keys of a state: a job's has some twenty.
const maxStateKeys = 64

// manyKeys is past how many keys repeatedKey compares them through a map
// rather than each with each.
const manyKeys = 32

// repeatedKey returns a key of the JSON object obj (valid JSON: the
// decoder has read it) that is there twice but for case, or "", and how
// many keys it read: past maxStateKeys, it stops reading.
func repeatedKey(obj []byte) (string, int) {
	var keys [][]byte
	depth, key := 0, false
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; c {
		case '{', '[':
			depth++
			key = depth == 1 && c == '{'
		case '}', ']':
			depth--
		case ',':
			key = depth == 1
		case '"':
			end := stringEnd(obj, i)
			if key {
				if keys = append(keys, obj[i:end]); len(keys) > maxStateKeys {
					return "", len(keys)
				}
				key = false
			}
			i = end - 1
		}
	}
	if len(keys) > manyKeys {
		seen := make(map[string]struct{}, len(keys))
		for _, k := range keys {
			s := fold(k)
			if _, dup := seen[s]; dup {
				return unquote(k), len(keys)
			}
			seen[s] = struct{}{}
		}
		return "", len(keys)
	}
	for i, k := range keys {
		for _, l := range keys[:i] {
			if bytes.EqualFold(k, l) || (bytes.IndexByte(k, '\\') >= 0 || bytes.IndexByte(l, '\\') >= 0) && fold(k) == fold(l) {
				return unquote(k), len(keys)
			}
		}
	}
	return "", len(keys)
}

// stringEnd returns the index past the JSON string that starts at obj[i].
func stringEnd(obj []byte, i int) int {
	for j := i + 1; j < len(obj); j++ {
		switch obj[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(obj)
}

// unquote returns the JSON string k decoded.
func unquote(k []byte) string {
	var s string
	_ = json.Unmarshal(k, &s)
	return s
}

// fold returns the JSON string k decoded, folded for case.
func fold(k []byte) string {
	return strings.ToLower(strings.ToUpper(unquote(k)))
}

// sameEnd reports whether the job states a and b end a job alike: the
// same job and type, final, with the same status, result and error.
func sameEnd(a, b []byte) bool {
	var x, y struct {
		ID     string          `json:"id"`
		Type   string          `json:"type"`
		Status wire.Status     `json:"status"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return x.Status.Final() && x.ID == y.ID && x.Type == y.Type && x.Status == y.Status &&
		x.Error == y.Error && bytes.Equal(x.Result, y.Result)
}
