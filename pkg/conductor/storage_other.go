//go:build !unix

package conductor

import "errors"

// diskSpace is not implemented here: the storage guard reports it.
func diskSpace(string) (free, total uint64, err error) {
	return 0, 0, errors.New("free space is not known on this system")
}
