package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromium finds Debian's chromium; under CI its absence fails the test
// (scripts/deps.sh installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt install chromium); CI must run the browser test")
	}
	t.Skip("chromium is not installed (apt install chromium)")
	return ""
}

// The monitor's runs page in a real headless Chromium: runs in several
// states on the local backend, one whose progress message is a script tag.
// The DOM shows the runs, their states and progress; the hostile message
// is text (no alert, no injected script element); the page refreshes in
// place; the detail page and a log tail load. A screenshot is written to
// $TETHER_ARTIFACTS (default artifacts/ at the top of the repository).
func TestRunsPageInBrowser(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	dir := t.TempDir()
	env := tetherEnv("XDG_STATE_HOME="+filepath.Join(dir, "state"), "HOME="+dir, "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("evil.toml", `name = "evil"
script = '''
tether report --progress 0.4 --message '<script>alert(1)</script><img src=x onerror=alert(2)>'
until [ -e "$HOME/release" ]; do tether report --heartbeat; sleep 0.2; done
echo evil-stdout-tail
'''
[resources]
walltime = "2m"
`)
	write("ok.toml", `name = "ok"
script = '''
echo ok-stdout-line
tether report --progress 1 --message "all done"
'''
`)
	write("bad.toml", `name = "bad"
script = 'echo bad-stderr >&2; exit 4'
`)
	write("slow.toml", `name = "slow"
script = 'sleep 300'
`)
	run := func(args ...string) string {
		cmd := exec.Command(tetherBin, args...)
		cmd.Env, cmd.Dir = env, dir
		out, _ := cmd.Output()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var o struct {
			RunID string `json:"run_id"`
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &o); err != nil || o.RunID == "" {
			t.Fatalf("tether %v: no run id in %q", args, out)
		}
		return o.RunID
	}
	okID := run("run", "ok.toml")
	badID := run("run", "bad.toml")
	slowID := run("submit", "slow.toml")
	cancelAndWait(t, env, dir, slowID) // decided before the page loads
	evilID := run("submit", "evil.toml")
	if !waitFor(30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "state", "tether", "runs", evilID, "status.jsonl"))
		return strings.Contains(string(b), "alert(1)")
	}) {
		t.Fatal("the evil Task reported no progress")
	}
	addr := startMonitor(t, env)
	base := "http://" + addr + "/"

	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU, chromedp.WindowSize(1280, 800))...)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	// a dialog (the hostile message's alert) is recorded and closed from
	// another goroutine: it would block the page
	dialogs := make(chan string, 4)
	opened := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range opened {
			if err != nil {
				return
			}
			select {
			case dialogs <- ev.Message:
			default:
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		must("text of "+sel, err)
		return v
	}
	row := func(id string) string { return `tr[data-run="` + id + `"]` }

	must("load the page", chromedp.Do(ctx, chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.CSS(row(evilID))), chromedp.WaitVisible(chromedp.CSS(row(slowID)))))
	states, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
		`Object.fromEntries([...document.querySelectorAll("tr.run")].map(r => [r.dataset.run, r.dataset.state]))`))
	must("read the states", err)
	want := map[string]string{evilID: "running", okID: "succeeded", badID: "failed", slowID: "cancelled"}
	for id, st := range want {
		if states[id] != st {
			t.Errorf("run %s shows %q, want %q (page: %v)", id, states[id], st, states)
		}
	}
	if m := text(row(evilID) + " .message"); m != `<script>alert(1)</script><img src=x onerror=alert(2)>` {
		t.Errorf("the hostile message shows as %q, want it as text", m)
	}
	if p := text(row(evilID) + " .pct"); p != "40%" {
		t.Errorf("progress shows %q, want 40%%", p)
	}
	bar, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(row(evilID)+" progress"), "value"))
	must("read the progress bar", err)
	if bar.Value != "0.400" {
		t.Errorf("progress bar value %q, want 0.400", bar.Value)
	}
	if st := text(row(evilID) + " .state"); !strings.HasPrefix(st, "running") {
		t.Errorf("state cell %q", st)
	}
	scripts, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("script")].map(s => s.src).join(",")`))
	must("list the scripts", err)
	if !strings.HasSuffix(scripts, "/static/refresh.js") || strings.Contains(scripts, ",") {
		t.Errorf("scripts on the page: %q, want only refresh.js", scripts)
	}
	imgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("main img").length`))
	must("count images", err)
	if imgs != 0 {
		t.Errorf("%d img elements got into the runs", imgs)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("screenshot", err)
	shot := artifactPath(t, "runs-page.png")
	must("write the screenshot", os.WriteFile(shot, png, 0o644))
	t.Logf("screenshot: %s", shot)

	// the page refreshes in place: the evil run ends and shows succeeded
	// among the decided runs without a reload
	must("mark the page", chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.__notReloaded = 1`)))
	os.WriteFile(filepath.Join(dir, "release"), nil, 0o644)
	must("see the evil run decided", chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`table.decided `+row(evilID)+`[data-state="succeeded"]`))))
	marked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__notReloaded === 1`))
	must("read the mark", err)
	if !marked {
		t.Error("the page reloaded itself instead of refreshing its runs")
	}

	// the detail page and the log tails
	must("open the detail page", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`table.decided `+row(badID)+` a.detail`)),
		chromedp.WaitVisible(chromedp.ID("state"))))
	if st := text("#state"); !strings.HasPrefix(st, "failed (exit)") {
		t.Errorf("detail page state %q, want failed (exit)", st)
	}
	if ev := text("#evidence"); !strings.Contains(ev, "exit file of attempt 1: exit 4") {
		t.Errorf("detail page evidence %q", ev)
	}
	if a := text("#attempts tbody"); !strings.Contains(a, "4") {
		t.Errorf("detail page attempts %q", a)
	}
	must("open the stderr tail", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#attempts a.log[href*="stderr"]`)),
		chromedp.WaitReady(chromedp.CSS("body"))))
	if b := text("body"); !strings.Contains(b, "bad-stderr") {
		t.Errorf("stderr tail %q, want bad-stderr", b)
	}
	must("open the stdout tail", chromedp.Do(ctx, chromedp.Navigate(base+"run/"+evilID+"/log/stdout")))
	if b := text("body"); !strings.Contains(b, "evil-stdout-tail") {
		t.Errorf("stdout tail %q, want evil-stdout-tail", b)
	}
	select {
	case m := <-dialogs:
		t.Errorf("a dialog opened: %q (the hostile message ran)", m)
	default:
	}
}

// artifactPath is where a test writes a file for people to look at.
func artifactPath(t *testing.T, name string) string {
	dir := os.Getenv("TETHER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(filepath.Join(dir, name))
	return abs
}
