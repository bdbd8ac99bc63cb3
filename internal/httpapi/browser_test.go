package httpapi_test

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// chromiumPath returns Debian's Chromium, or skips the test without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skip("no chromium: install the Debian package chromium (apt-get install -y chromium) to run the browser tests")
	return ""
}

// newBrowser starts a headless Chromium for the test and returns its
// chromedp context; the browser ends with the test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	)
	// The browser lives as long as the context of its first Run: not the
	// test's, which ends before cleanups run, but this one, cancelled by a
	// cleanup that runs before t.TempDir's.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(t.Context()), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start it now, so that the actions can run under a deadline.
	require.NoError(t, chromedp.Do(ctx))
	return ctx
}

// TestFleetPageInBrowser logs in through the form in a real browser, reads
// the fleet page's numbers from its DOM, checks that its bars are drawn to
// scale, that River UI loads its jobs with the session cookie, and that
// logout ends the session. Screenshots of the fleet page and of River UI go
// to the test's artifact directory (go test -artifacts keeps them).
func TestFleetPageInBrowser(t *testing.T) {
	t.Parallel()
	browser := newBrowser(t)
	e := newPageEnv(t)
	knownFleet(t, e.env)
	base := e.srv.URL

	ctx, cancel := context.WithTimeout(browser, 30*time.Second)
	defer cancel()
	run := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(ctx, steps...))
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, sel)
		return strings.TrimSpace(s)
	}
	location := func() string {
		t.Helper()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		require.NoError(t, err)
		return loc
	}

	// Not logged in: the fleet page sends the browser to the login form.
	run(chromedp.Navigate(base+"/admin/"), chromedp.WaitVisible(chromedp.CSS("#key")))
	require.Equal(t, base+"/admin/login", location())

	// A wrong key shows the error.
	run(chromedp.SendKeys(chromedp.CSS("#key"), "not-the-key"),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#login-error")))
	require.Equal(t, "Invalid key.", text("#login-error"))

	// The right key lands on the fleet page.
	run(chromedp.SendKeys(chromedp.CSS("#key"), testAdminKey),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#latest-version")))
	require.Equal(t, base+"/admin/", location())

	require.Equal(t, "2", text("#latest-version"))
	require.Equal(t, "8", text("#tenants-total"))
	require.Equal(t, "5", text("#tenants-behind"))
	require.Equal(t, "2", text("#tenants-failed"))
	require.Equal(t, "2", text("#queue-remaining"))
	require.Equal(t, "4", text(`#statuses tr[data-status="COMPLETED"] .count`))
	require.Equal(t, "2", text(`#statuses tr[data-status="NEVER_MIGRATED"] .count`))

	// The bars, as drawn: widths proportional to the counts (2, 3, 3).
	type bar struct {
		Version string  `json:"version"`
		Count   string  `json:"count"`
		Width   float64 `json:"width"`
	}
	bars, err := chromedp.Run(ctx, chromedp.Evaluate[[]bar](`[...document.querySelectorAll("#versions tbody tr")].map(r => ({
		version: r.dataset.version,
		count: r.querySelector(".count").textContent,
		width: r.querySelector(".bar span").getBoundingClientRect().width,
	}))`))
	require.NoError(t, err)
	require.Len(t, bars, 3)
	require.Equal(t, []string{"never", "1", "2"}, []string{bars[0].Version, bars[1].Version, bars[2].Version})
	require.Equal(t, []string{"2", "3", "3"}, []string{bars[0].Count, bars[1].Count, bars[2].Count})
	require.Greater(t, bars[1].Width, 100.0, "the longest bar is drawn wide")
	require.InDelta(t, bars[1].Width, bars[2].Width, 0.5)
	require.InDelta(t, 2.0/3.0, bars[0].Width/bars[1].Width, 0.01)

	// The hostile error is shown as text, and no script runs on the page.
	errText, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#failed pre.error")].map(p => p.textContent).join("\n")`))
	require.NoError(t, err)
	require.Contains(t, errText, hostileError)
	scripts, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("script, img").length`))
	require.NoError(t, err)
	require.Zero(t, scripts)

	// The session cookie is out of reach of scripts.
	cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	require.NoError(t, err)
	require.Empty(t, cookies)

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	savePNG(t, "fleet.png", shot)

	// River UI loads and lists the queued jobs through its API, with the
	// cookie alone.
	run(chromedp.Navigate(base + "/admin/riverui/jobs?state=available"))
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.body.innerText.includes("migrate_tenant")`, chromedp.WithPollingTimeout(15*time.Second)))
	require.NoError(t, err, "River UI did not show the queued jobs")
	shot, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	savePNG(t, "riverui.png", shot)

	// Logout ends the session.
	run(chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.CSS("#logout")),
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#key")))
	require.Equal(t, base+"/admin/login", location())
	run(chromedp.Navigate(base+"/admin/"), chromedp.WaitVisible(chromedp.CSS("#key")))
	require.Equal(t, base+"/admin/login", location())
}

// savePNG checks that b is a PNG of the window's width and writes it to the
// test's artifact directory.
func savePNG(t *testing.T, name string, b []byte) {
	t.Helper()
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, 1200, cfg.Width)
	path := filepath.Join(t.ArtifactDir(), name)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	t.Logf("screenshot: %s", path)
}
