package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// MaxFileBytes bounds the credentials file: at a few hundred bytes a
// credential, room for tens of thousands.
const MaxFileBytes = 16 << 20

// MaxCredentials bounds the credentials one file holds.
const MaxCredentials = 10000

// FileName is the credentials file's name in conductord's data directory.
const FileName = "credentials.json"

// file is the credentials file's JSON.
type file struct {
	Version     int          `json:"version"`
	Credentials []Credential `json:"credentials"`
}

// ReadFile returns the credentials in the file at path. A file that does
// not exist holds none (an error wrapping fs.ErrNotExist). A file that
// others than its owner may read or write is refused: it says who may
// connect.
func ReadFile(path string) ([]Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	defer f.Close()
	return read(f, path)
}

func read(f *os.File, path string) ([]Credential, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("credentials file %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credentials file %s: mode %#o lets other users read it; chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("credentials file %s: over %d bytes", path, MaxFileBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil // created by a lock, never written
	}
	var v file
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	if v.Version != 1 {
		return nil, fmt.Errorf("credentials file %s: version %d, want 1", path, v.Version)
	}
	if len(v.Credentials) > MaxCredentials {
		return nil, fmt.Errorf("credentials file %s: %d credentials, more than %d", path, len(v.Credentials), MaxCredentials)
	}
	seen := make(map[string]bool, len(v.Credentials))
	for _, c := range v.Credentials {
		if err := c.Check(); err != nil {
			return nil, fmt.Errorf("credentials file %s: %w", path, err)
		}
		if seen[c.ID] {
			return nil, fmt.Errorf("credentials file %s: credential %s twice", path, c.ID)
		}
		seen[c.ID] = true
	}
	return v.Credentials, nil
}

// Update changes the credentials file at path with change, under an
// exclusive lock of path+".lock", so that two commands never lose each
// other's change. The file is written whole to a temporary file (mode
// 0600), synced and renamed over path: a reader sees the old file or
// the new one, never half of one. A file that does not exist starts
// empty.
func Update(path string, change func([]Credential) ([]Credential, error)) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("credentials: lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("credentials: lock: %w", err)
	}
	creds, err := ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if creds, err = change(slices.Clone(creds)); err != nil {
		return err
	}
	if len(creds) > MaxCredentials {
		return fmt.Errorf("credentials: %d, more than %d", len(creds), MaxCredentials)
	}
	data, err := json.MarshalIndent(file{Version: 1, Credentials: creds}, "", "  ")
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	return writeAtomic(path, append(data, '\n'))
}

// Add issues a new credential in the file at path and returns its token,
// which is shown once and kept nowhere. An id the file holds is refused
// unless replace, which issues it again: its old token stops working.
func Add(path string, c Credential, replace bool) (string, error) {
	tok, hash, err := NewToken(c.ID, c.Role)
	if err != nil {
		return "", err
	}
	c.Hash, c.Created = hash, time.Now().UTC().Truncate(time.Second)
	if err := c.Check(); err != nil {
		return "", err
	}
	err = Update(path, func(creds []Credential) ([]Credential, error) {
		i := slices.IndexFunc(creds, func(o Credential) bool { return o.ID == c.ID })
		switch {
		case i < 0:
			return append(creds, c), nil
		case replace:
			creds[i] = c
			return creds, nil
		}
		return nil, fmt.Errorf("credential %s exists: revoke it first, or issue it again with --replace", c.ID)
	})
	if err != nil {
		return "", err
	}
	return tok, nil
}

// Revoke removes the credential id from the file at path. conductord
// reads the file again within a second and closes the connections that
// presented it.
func Revoke(path, id string) error {
	return Update(path, func(creds []Credential) ([]Credential, error) {
		i := slices.IndexFunc(creds, func(o Credential) bool { return o.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("no credential %s in %s", id, path)
		}
		return slices.Delete(creds, i, i+1), nil
	})
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	defer os.Remove(tmp.Name()) // once renamed, there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
