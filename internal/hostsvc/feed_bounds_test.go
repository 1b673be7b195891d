package hostsvc

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// TestFeed_PageCacheBounded: conductord keeps the pages of cancelled ids
// it encodes, by the "after" asked, until the next cancel. One host,
// within its page rate (a burst of 200), asks for 200 pages with
// distinct "after" values over 4,000 ids held: each a near-full page.
// Every request is answered, and what the cache holds stays within
// maxPagesCached (four whole pages), whatever the hosts ask.
func TestFeed_PageCacheBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const held = 4000
	for i := range held {
		_, err := b.js.PublishAsync(subject.KV(b.sp.CancelBucket(), uuid.NewString()), []byte("{}"))
		require.NoError(t, err, "id %d", i)
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(waitLimit):
		t.Fatal("cancels not stored")
	}
	require.Eventually(t, func() bool {
		b.srv.feed.mu.Lock()
		defer b.srv.feed.mu.Unlock()
		return b.srv.feed.seq == held
	}, waitLimit, 5*time.Millisecond, "the feed holds the ids")

	inbox := b.nc.NewInbox()
	sub, err := b.nc.SubscribeSync(inbox + ".*")
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	const asks = 200 // pageBurst: all within h1's rate
	for i := range asks {
		data, _ := json.Marshal(wire.CancelsRequest{After: uint64(i)})
		require.NoError(t, b.nc.PublishRequest(b.sp.CancelsAs("h1"), fmt.Sprintf("%s.%d", inbox, i), data))
	}
	for i := range asks {
		m, err := sub.NextMsg(waitLimit)
		require.NoError(t, err, "answer %d", i)
		require.Equal(t, "200", m.Header.Get(names.HeaderStatus), "a page request within the rate refused")
	}
	b.srv.feed.mu.Lock()
	pages, bytes := len(b.srv.feed.pages), 0
	for _, p := range b.srv.feed.pages {
		bytes += len(p)
	}
	b.srv.feed.mu.Unlock()
	require.Positive(t, pages, "no page cached at all")
	require.LessOrEqual(t, bytes, maxPagesCached, "one host's %d page requests pin %d bytes in %d pages", asks, bytes, pages)
}
