package ctl

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRun_Lookup: set, get, ls and del a named lookup against a real
// conductor; a value that is not JSON is refused before any call, and
// the API's refusals come back with their reason.
func TestRun_Lookup(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	_, err := runLive(t, b, "lookup", "set", "prices", "user:7/a b", `{ "eur": 12.5 }`)
	require.NoError(t, err)
	_, err = runLive(t, b, "lookup", "set", "prices", "sku-2", `3`)
	require.NoError(t, err)
	out, err := runLive(t, b, "lookup", "get", "prices", "user:7/a b")
	require.NoError(t, err)
	assert.JSONEq(t, `{"eur":12.5}`, out)
	out, err = runLive(t, b, "lookup", "ls", "prices")
	require.NoError(t, err)
	assert.Equal(t, "sku-2\nuser:7/a b\n", out)
	_, err = runLive(t, b, "lookup", "del", "prices", "sku-2")
	require.NoError(t, err)
	_, err = runLive(t, b, "lookup", "get", "prices", "sku-2")
	require.ErrorContains(t, err, "404")

	_, err = runLive(t, b, "lookup", "set", "prices", "k", `not json`)
	require.ErrorContains(t, err, "not JSON")
	_, err = runLive(t, b, "lookup", "set", "bad.name", "k", `1`)
	require.ErrorContains(t, err, "letters, digits")
	_, err = runLive(t, b, "lookup", "get", "prices")
	require.ErrorContains(t, err, "usage")
}
