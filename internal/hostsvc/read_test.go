package hostsvc

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// TestRead: a host reads its types' states through conductord, from the
// bucket with their revision, from the archive with none; another type's
// is refused in either; an archive that cannot tell yet is an error, not
// "none".
func TestRead(t *testing.T) {
	t.Parallel()
	archive := map[string][]byte{
		"a1": stateOf("a1", "sq", wire.StatusSucceeded),
		"a2": stateOf("a2", "other", wire.StatusSucceeded),
	}
	b := setupWith(t, func(c *Config) {
		c.Archived = func(id string) ([]byte, bool, error) {
			if id == "busy" {
				return nil, false, errors.New("the archive is taking the job ends; try again")
			}
			s, ok := archive[id]
			return s, ok, nil
		}
	})
	ctx := context.Background()
	c := &Caller{nc: b.nc, sp: b.sp, id: "h1", making: make(chan struct{}, makingAtOnce)}
	rev, err := b.states.Create(ctx, "j1", stateOf("j1", "sq", wire.StatusRunning))
	require.NoError(t, err)
	_, err = b.states.Create(ctx, "o1", stateOf("o1", "other", wire.StatusRunning))
	require.NoError(t, err)

	data, got, err := c.Read(ctx, "sq", "j1")
	require.NoError(t, err)
	require.Equal(t, rev, got)
	require.JSONEq(t, string(stateOf("j1", "sq", wire.StatusRunning)), string(data))
	data, got, err = c.Read(ctx, "sq", "a1")
	require.NoError(t, err)
	require.Zero(t, got, "from the archive")
	require.NotNil(t, data)
	for _, id := range []string{"o1", "a2"} {
		_, _, err = c.Read(ctx, "sq", id)
		require.ErrorContains(t, err, "not a job of type sq", id)
	}
	data, _, err = c.Read(ctx, "sq", "none")
	require.NoError(t, err)
	require.Nil(t, data)
	_, _, err = c.Read(ctx, "sq", "busy")
	require.ErrorContains(t, err, "try again")
}
