//go:build !unix

package archive

import "os"

// lockDir does not lock dir: the platform has no flock.
func lockDir(dir string) (*os.File, error) { return nil, nil }
