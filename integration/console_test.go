package integration

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/console/consoletest"
	"github.com/conductor-run/conductor/pkg/client"
)

// browser starts a headless Chromium for t and returns a tab's context,
// bounded by limit.
func browser(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(consoletest.Chromium(t)),
		chromedp.NoSandbox, // the test may run as root (CI containers)
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1360, 900),
	)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	tab, cancelTab := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)
	// An exception the page did not catch fails the test; what it logs
	// to its console is logged with the test's output.
	var mu sync.Mutex
	var thrown []string
	require.NoError(t, chromedp.Listen(tab, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			mu.Lock()
			thrown = append(thrown, e.ExceptionDetails.Text+" "+exceptionDescription(e.ExceptionDetails))
			mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range e.Args {
				args = append(args, cmp.Or(a.Description, string(a.Value)))
			}
			t.Logf("page console.%s: %s", e.Type, strings.Join(args, " "))
		}
	}))
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		require.Empty(t, thrown, "exceptions the page did not catch")
	})
	return tab
}

// exceptionDescription is what an exception's details say of it.
func exceptionDescription(d *runtime.ExceptionDetails) string {
	if d == nil || d.Exception == nil {
		return ""
	}
	return d.Exception.Description + fmt.Sprintf(" (%s:%d)", d.URL, d.LineNumber)
}

// screenshot saves the page (the viewport if !full) as
// $CONSOLE_SCREENSHOTS/name.png, when that variable names a directory
// (relative to the repository: make screenshots sets docs/console).
func screenshot(t *testing.T, tab context.Context, name string, full bool) {
	t.Helper()
	dir := os.Getenv("CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", dir)
	}
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(tab, shot)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

// waitFor waits until the page's expression is true.
func waitFor(expr string, limit time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(limit))
}

// goTo shows the view of hash (a same-document navigation: the page, its
// feed and its token stay).
func goTo(hash string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void]("location.hash = " + strconv.Quote(hash))
}

// TestConsole_Browser drives the console's page in headless Chromium
// against a running cluster with a token: it signs in, shows the workers,
// retries a dead job from the front page, and drains a pool through the
// confirmation dialog, checked through the API.
func TestConsole_Browser(t *testing.T) {
	tab := browser(t, 4*time.Minute)
	const token = "console-test-token"
	c := newCluster(t, withToken(token))
	c.workerd("web-1", squares(2))
	c.waitWorkers("squares", 2)

	// A job that dies: squares fails a payload that is not a number for
	// good, so its one attempt leaves it dead.
	var sub struct{ ID string }
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/jobs/squares?max_attempts=1", `"seven"`, nil, &sub))
	dead := func() client.Job {
		var j client.Job
		c.do(http.MethodGet, "/v1/jobs/"+sub.ID, "", nil, &j)
		return j
	}
	require.Eventually(t, func() bool { return dead().Status == client.StatusDead }, 20*time.Second, 50*time.Millisecond)
	before := dead()
	// Some work for the charts while the page is open: bursts of squares
	// that vary, and, once the dead job is retried (so that it stays in
	// the front page's ten latest), now and then one that dies.
	var failing atomic.Bool
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	go func() {
		submit := func(path, body string) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url(path), strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for k := range 1 + i/30%5*2 {
				submit("/v1/jobs/squares", strconv.Itoa(i+k))
			}
			if failing.Load() && i%40 == 39 {
				submit("/v1/jobs/squares?max_attempts=2", `"x"`)
			}
		}
	}()

	// The page asks for the token (the API said 401), then shows the
	// workers from its live feed.
	require.NoError(t, chromedp.Do(tab,
		chromedp.Navigate(c.url("/")),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS(`#login input[name=token]`), token),
		chromedp.Click(chromedp.CSS(`#login button[value=ok]`)),
		chromedp.WaitNotVisible(chromedp.CSS("#login")),
		waitFor(`document.querySelectorAll('#workers tr[data-pool="squares"]').length === 2`, 30*time.Second),
		waitFor(`document.querySelector('#live').textContent === 'live'`, 10*time.Second),
		chromedp.WaitVisible(chromedp.CSS(`#signout`)),
	))
	require.NoError(t, chromedp.Do(tab, waitFor(`document.querySelectorAll('#recent tr[data-status="dead"]').length > 0`, 20*time.Second)))
	screenshot(t, tab, "overview", true)

	// The job's page: its attempts, its error and its payload.
	require.NoError(t, chromedp.Do(tab,
		goTo("#/job/"+sub.ID),
		chromedp.WaitVisible(chromedp.CSS("#job-attempts")),
		waitFor(`document.querySelector('#job-error').textContent.includes('payload must be a number')`, 10*time.Second),
		waitFor(`document.querySelector('#job-payload').textContent.includes('seven')`, 10*time.Second),
	))
	screenshot(t, tab, "job", true)

	// Retry the dead job from the front page's list, confirming.
	require.NoError(t, chromedp.Do(tab,
		goTo("#/"),
		chromedp.WaitVisible(chromedp.CSS(`#recent tr[data-job="`+sub.ID+`"] button[data-action=retry]`)),
		chromedp.Click(chromedp.CSS(`#recent tr[data-job="`+sub.ID+`"] button[data-action=retry]`)),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS(`#confirm button[data-ok]`)),
		waitFor(`document.querySelector('#banner').textContent.includes('queued again')`, 10*time.Second),
	))
	require.Eventually(t, func() bool {
		j := dead()
		return j.UpdatedAt.After(before.UpdatedAt) && len(j.History) > len(before.History)
	}, 20*time.Second, 50*time.Millisecond, "the retried job ran again")
	failing.Store(true)

	// The charts, from the feed's history and snapshots: pictured only.
	if os.Getenv("CONSOLE_SCREENSHOTS") != "" {
		require.NoError(t, chromedp.Do(tab,
			goTo("#/charts"),
			chromedp.WaitVisible(chromedp.CSS(`#charts .chart-row[data-type="squares"] canvas`)),
			// A minute of points, for a picture worth showing.
			waitFor(`document.querySelector('#charts .chart-row[data-type="squares"]').dataset.points >= 60`, 90*time.Second),
		))
		screenshot(t, tab, "charts", true)
	}

	// Drain the pool through its dialog.
	require.NoError(t, chromedp.Do(tab, goTo("#/")))
	drain := `#pools tr[data-type="squares"] button[data-op=drain]`
	require.NoError(t, chromedp.Do(tab,
		chromedp.WaitVisible(chromedp.CSS(drain)),
		chromedp.Click(chromedp.CSS(drain)),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		waitFor(`document.querySelector('#confirm [data-title]').textContent === 'Drain pool squares?'`, 5*time.Second),
	))
	screenshot(t, tab, "pool-dialog", false)
	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.CSS(`#confirm button[data-ok]`)),
		waitFor(`document.querySelector('#banner').textContent.includes('drain of pool squares sent')`, 10*time.Second),
	))
	require.Eventually(t, func() bool { return c.pool("squares").State == "drained" }, 30*time.Second, 50*time.Millisecond,
		"the pool drained: %+v", c.pool("squares"))
	require.NoError(t, chromedp.Do(tab,
		waitFor(`[...document.querySelectorAll('#pools tr[data-type="squares"] .st')].some(e => e.textContent === 'drained')`, 10*time.Second)))

	// The events tail: a resume sent through the API shows as it happens.
	require.NoError(t, chromedp.Do(tab,
		goTo("#/events"),
		chromedp.SetValue(chromedp.CSS(`#events-form input[name=pool]`), "squares"),
		chromedp.Click(chromedp.CSS(`#events-form button[type=submit]`)),
		waitFor(`document.querySelector('#events-form [data-status]').textContent === 'following'`, 10*time.Second),
	))
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/pools/squares/resume", "", nil, nil))
	require.NoError(t, chromedp.Do(tab,
		waitFor(`[...document.querySelectorAll('#events-tail li b')].some(e => e.textContent === 'resumed')`, 10*time.Second)))

	// The logs tail: followed where conductord serves the workers' logs,
	// else a 404 the page explains.
	require.NoError(t, chromedp.Do(tab,
		goTo("#/logs"),
		chromedp.SetValue(chromedp.CSS(`#logs-form input[name=pool]`), "squares"),
		chromedp.Click(chromedp.CSS(`#logs-form button[type=submit]`)),
		waitFor(`['following', 'no worker logs yet'].some(s => document.querySelector('#logs-form [data-status]').textContent.includes(s))`, 10*time.Second),
	))

	// The token was never in a URL; signing out forgets it and asks again.
	href, err := chromedp.Run(tab, chromedp.Evaluate[string]("location.href"))
	require.NoError(t, err)
	require.NotContains(t, href, token)
	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.CSS("#signout")),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		waitFor(`sessionStorage.getItem('conductor.token') === null`, 5*time.Second),
	))

}

// TestConsole_BrowserOpen: against a conductord with no token the page
// asks for none, and its feed goes live.
func TestConsole_BrowserOpen(t *testing.T) {
	tab := browser(t, time.Minute)
	c := newCluster(t)
	require.NoError(t, chromedp.Do(tab,
		chromedp.Navigate(c.url("/")),
		waitFor(`document.querySelector('#live').textContent === 'live'`, 20*time.Second),
		waitFor(`!document.querySelector('#login').open && document.querySelector('#signout').hidden`, 5*time.Second),
		waitFor(`document.querySelector('#hosts tbody').textContent.includes('no live host')`, 5*time.Second),
	))
}

// TestConsole_BrowserRoles: with credentials, a submitter's token is
// taken but may not read the console's feed: the page says which role it
// needs; an operator's token then works.
func TestConsole_BrowserRoles(t *testing.T) {
	tab := browser(t, time.Minute)
	c := newCredCluster(t, nil)
	web := c.issue("web", "submitter", "--types", "squares")
	ops := c.issue("ops", "operator")
	c.start()
	require.NoError(t, chromedp.Do(tab,
		chromedp.Navigate(c.url("/")),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS(`#login input[name=token]`), web),
		chromedp.Click(chromedp.CSS(`#login button[value=ok]`)),
		waitFor(`document.querySelector('#login').open && document.querySelector('#login [data-message]').textContent.includes('needs the operator role')`, 10*time.Second),
		waitFor(`document.querySelector('#banner').textContent.includes('sign in with an operator or admin token')`, 5*time.Second),
		chromedp.SetValue(chromedp.CSS(`#login input[name=token]`), ops),
		chromedp.Click(chromedp.CSS(`#login button[value=ok]`)),
		waitFor(`document.querySelector('#live').textContent === 'live'`, 20*time.Second),
		waitFor(`document.querySelector('#banner').hidden`, 5*time.Second),
	))
}
