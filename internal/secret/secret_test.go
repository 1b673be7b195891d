package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	tok, shared, err := ReadTokenFile(file("ok", "s3cret\n", 0o600))
	require.NoError(t, err)
	require.Equal(t, "s3cret", tok)
	require.False(t, shared)

	tok, shared, err = ReadTokenFile(file("shared", "s3cret\r\n", 0o644))
	require.NoError(t, err)
	require.Equal(t, "s3cret", tok)
	require.True(t, shared, "others may read it")

	for name, tc := range map[string]struct{ content, err string }{
		"empty":   {"\n", "empty"},
		"lines":   {"a\nb\n", "more than one line"},
		"too big": {strings.Repeat("x", maxFile+1), "more than 65536 bytes"},
	} {
		_, _, err := ReadTokenFile(file(name, tc.content, 0o600))
		require.ErrorContains(t, err, tc.err, name)
	}
	_, _, err = ReadTokenFile(dir)
	require.ErrorContains(t, err, "not a regular file")
	_, _, err = ReadTokenFile(filepath.Join(dir, "absent"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
