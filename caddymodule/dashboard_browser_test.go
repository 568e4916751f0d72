package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// chromium finds Debian's chromium. Without it the browser tests fail in CI (CI is set) and
// are skipped locally.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("BTL_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (apt-get install -y chromium); the dashboard tests must run in CI")
	}
	t.Skip("chromium is not installed; the dashboard browser tests run in CI")
	return ""
}

func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("starting chromium: %v", err)
		}
		t.Skipf("chromium cannot start here: %v", err)
	}
	return ctx
}

// seedDashboard writes 120 rows spread over the last ~90 days, several models and providers,
// with cache reads and savings on every lever.
func seedDashboard(t *testing.T, db, ws string) {
	t.Helper()
	store, err := ledger.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Now().UTC().Truncate(time.Microsecond)
	models := []struct{ req, prov, up string }{
		{"btl-fast", "sim", "gpt-4o-mini"}, {"btl-frontier", "anthropic", "claude-sonnet-4-5"},
		{"btl-frontier", "openai", "gpt-5"}, {"gemini/gemini-2.5-flash", "gemini", "gemini-2.5-flash"},
	}
	rows := make([]ledger.Row, 120)
	for i := range rows {
		m := models[i%len(models)]
		r := ledger.Row{RequestID: fmt.Sprintf("req_dash_%04d", i), Time: now.Add(-time.Duration(i)*18*time.Hour - time.Minute),
			WorkspaceID: ws, KeyID: "key_seed", RequestedModel: m.req, Provider: m.prov, UpstreamModel: m.up,
			Usage:      ledger.Usage{InputUncached: int64(800 + 37*i), CacheRead: int64(2000 + 91*(i%13)), CacheWrite5m: int64(50 * (i % 3)), Output: int64(120 + 11*i)},
			CostMicros: ledger.Micros(4_000 + 1_300*(i%17)), Status: 200, CacheOutcome: []string{"miss", "hit", "miss", "coalesced"}[i%4],
			Attempts: 1, LatencyUs: int64(300_000 + 7_000*i), TTFBUs: 120_000, Stream: i%2 == 0}
		r.Savings = ledger.Savings{SavePromptCache: ledger.Micros(1_500 + 40*i), SaveResponseCache: ledger.Micros(900 * (i % 4)),
			SaveCoalesce: ledger.Micros(300 * (i % 3)), SaveCompression: ledger.Micros(200 + 10*i), SaveDedupe: ledger.Micros(150 * (i % 2)),
			SaveOutputBudget: ledger.Micros(400), SaveRouting: ledger.Micros(700 * (i % 5))}
		s := r.Savings
		r.BaselineMicros = r.CostMicros + s.SavePromptCache + s.SaveResponseCache + s.SaveCoalesce + s.SaveCompression + s.SaveDedupe + s.SaveOutputBudget + s.SaveRouting
		if i%29 == 5 {
			r.Status, r.ErrorCode, r.CostMicros, r.BaselineMicros, r.Savings, r.Usage = 429, "rate_limit_exceeded", 0, 0, ledger.Savings{}, ledger.Usage{}
		}
		rows[i] = r
	}
	if err := store.InsertRows(context.Background(), "seed", rows); err != nil {
		t.Fatal(err)
	}
}

// choosePeriod picks a period in the select, as a keyboard user would (focus, then change),
// and waits for the page to reload its data.
func choosePeriod(ctx context.Context, days int) error {
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#period"), strconv.Itoa(days))); err != nil {
		return err
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("period").dispatchEvent(new Event("change"))`)); err != nil {
		return err
	}
	return chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`body[data-loaded="%d"]`, days))))
}

type apiSummary struct {
	Total struct {
		Requests int64       `json:"requests"`
		Cost     json.Number `json:"cost_usd"`
		Saved    json.Number `json:"saved_usd"`
	} `json:"total"`
	Balance json.Number `json:"balance_usd"`
}

func getSummary(t *testing.T, base, key string, days int) apiSummary {
	t.Helper()
	from := time.Now().UTC().AddDate(0, 0, -(days - 1)).Format("2006-01-02")
	status, raw := call(t, "GET", base+"/v1/usage/summary?group_by=day&from="+from, key, "")
	if status != 200 {
		t.Fatalf("summary: %d %s", status, raw)
	}
	var s apiSummary
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func requestIDs(t *testing.T, base, key string, days int, cursor string) ([]string, string) {
	t.Helper()
	from := time.Now().UTC().AddDate(0, 0, -(days - 1)).Format("2006-01-02")
	status, raw := call(t, "GET", base+"/v1/usage/requests?limit=10&from="+from+"&cursor="+cursor, key, "")
	if status != 200 {
		t.Fatalf("requests: %d %s", status, raw)
	}
	var res struct {
		Data []struct {
			ID string `json:"request_id"`
		} `json:"data"`
		Next string `json:"next_cursor"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(res.Data))
	for i, d := range res.Data {
		ids[i] = d.ID
	}
	return ids, res.Next
}

// shownMoney parses a dollar amount as the page shows it ("$1,234.56", "$0.0123").
func shownMoney(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.NewReplacer("$", "", ",", "").Replace(s), 64)
	if err != nil {
		t.Fatalf("not a money amount on the page: %q", s)
	}
	return v
}

func TestDashboardInBrowser(t *testing.T) {
	ctx := newBrowser(t)
	tl := newTestLedger(t, 250*ledger.Credit)
	seedDashboard(t, tl.db, tl.workspace)
	sim := simulated.New(simulated.Options{})
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			base_url `+up.URL+`/v1
			models gpt-4o-mini
		}
		model btl-fast {
			candidates sim/gpt-4o-mini
		}
	}`), fullChain+"\tbtl_dashboard\n")
	_, readKey := createKey(t, base, tl.ownerKey, `{"name":"dashboard","scopes":["usage:read"]}`)
	_, inferKey := createKey(t, base, tl.ownerKey, `{"name":"app","scopes":["inference"]}`)

	// The page itself is public and self-contained.
	resp, err := http.Get(base + "/dashboard/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("dashboard page: %d %v", resp.StatusCode, resp.Header)
	}

	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	checkStats := func(days int) {
		t.Helper()
		want := getSummary(t, base, readKey, days)
		wantCost, _ := want.Total.Cost.Float64()
		if got := shownMoney(t, text("#stat-spend")); math.Abs(got-wantCost) > 0.00005+wantCost*1e-4 {
			t.Errorf("%d days: page shows spend %v, API says %s", days, got, want.Total.Cost)
		}
		attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#stat-spend"), "data-value"))
		if err != nil {
			t.Fatal(err)
		}
		raw := attr.Value
		if v, _ := strconv.ParseFloat(raw, 64); math.Abs(v-wantCost) > 1e-9 {
			t.Errorf("%d days: spend data-value %q, API %s", days, raw, want.Total.Cost)
		}
		if got := text("#stat-requests"); got != strconv.FormatInt(want.Total.Requests, 10) {
			t.Errorf("%d days: page shows %s requests, API says %d", days, got, want.Total.Requests)
		}
		wantBal, _ := want.Balance.Float64()
		if got := shownMoney(t, text("#stat-balance")); math.Abs(got-wantBal) > 0.005 {
			t.Errorf("balance: page %v, API %s", got, want.Balance)
		}
	}
	firstRow := func() string {
		attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#requests tbody tr"), "data-request-id"))
		if err != nil {
			t.Fatal(err)
		}
		return attr.Value
	}
	waitFirstRow := func(want string) {
		t.Helper()
		sel := fmt.Sprintf(`#requests tbody tr[data-request-id=%q]:first-child`, want)
		if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
			t.Fatalf("waiting for %s first in the requests table (have %s): %v", want, firstRow(), err)
		}
	}

	// Sign in with the usage:read key.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), readKey),
		chromedp.Click(chromedp.CSS("#signin-button")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-loaded="30"]`)),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	checkStats(30)
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#requests tbody tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	page1, next := requestIDs(t, base, readKey, 30, "")
	if rows != 10 || firstRow() != page1[0] {
		t.Fatalf("requests table: %d rows, first %s; API page 1 starts %s", rows, firstRow(), page1[0])
	}
	svgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#chart-spend svg rect, #chart-savings svg rect").length`))
	if err != nil {
		t.Fatal(err)
	}
	if svgs < 30 {
		t.Errorf("charts drew %d bars", svgs)
	}
	if got := text("#prices tbody tr td"); got != "btl-fast" {
		t.Errorf("price list starts with %q", got)
	}

	// Page through requests: older, older, then back.
	page2, next2 := requestIDs(t, base, readKey, 30, next)
	page3, _ := requestIDs(t, base, readKey, 30, next2)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#req-older"))); err != nil {
		t.Fatal(err)
	}
	waitFirstRow(page2[0])
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#req-older"))); err != nil {
		t.Fatal(err)
	}
	waitFirstRow(page3[0])
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#req-newer"))); err != nil {
		t.Fatal(err)
	}
	waitFirstRow(page2[0])

	// Change the period with the keyboard-operable select.
	for _, days := range []int{90, 7} {
		if err := choosePeriod(ctx, days); err != nil {
			t.Fatalf("period %d: %v", days, err)
		}
		checkStats(days)
		if ids, _ := requestIDs(t, base, readKey, days, ""); firstRow() != ids[0] {
			t.Errorf("period %d: requests table restarts at %s, want %s", days, firstRow(), ids[0])
		}
	}

	// Screenshot of the seeded dashboard (30 days) for the README.
	if err := choosePeriod(ctx, 30); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if os.Getenv("BTL_UPDATE_SCREENSHOT") != "" {
		shot = filepath.Join("..", "docs", "dashboard.png")
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}

	// The key stays in this tab's sessionStorage only.
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("btl.dashboard.key")`))
	if err != nil {
		t.Fatal(err)
	}
	local, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(localStorage)+document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	if stored != readKey || strings.Contains(local, "btl_") {
		t.Errorf("key storage: session %q, local+cookies %q", stored, local)
	}

	// Sign out, then a key without usage:read is refused with the API's message.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#signout")),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), inferKey),
		chromedp.Click(chromedp.CSS("#signin-button")),
		chromedp.WaitVisible(chromedp.CSS("#error")),
	); err != nil {
		t.Fatalf("refused key: %v", err)
	}
	errText := text("#error")
	dashHidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("dash").hidden && sessionStorage.getItem("btl.dashboard.key") === null`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errText, "403") || !strings.Contains(errText, "lacks the scope") || !dashHidden {
		t.Fatalf("refused key: error %q, dashboard hidden and key dropped: %v", errText, dashHidden)
	}
}
