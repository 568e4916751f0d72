package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// TestDashboardKeysInBrowser: a keys:write key signs in to the page and, with the keyboard
// only, creates a key with an allow-list, a rate limit, a budget and an expiry (its secret
// shown once), revokes it, and starts a top-up.
func TestDashboardKeysInBrowser(t *testing.T) {
	ctx := newBrowser(t)
	tl := newTestLedger(t, 20*ledger.Credit)
	stripe := newFakeStripe(t)
	up := httptest.NewServer(simulated.New(simulated.Options{}))
	t.Cleanup(up.Close)
	base := startGateway(t, tl.withStorage(`btl {
		provider sim simulated {
			base_url `+up.URL+`/v1
			models gpt-4o-mini
		}
		model btl-fast {
			candidates sim/gpt-4o-mini
		}
		payments stripe {
			secret_key sk_test_123
			webhook_secret whsec_test_456
			base_url `+stripe.srv.URL+`
		}
	}`), fullChain+"\tbtl_dashboard\n")
	admin := mintKey(t, base, tl.ownerKey, `{"name":"key admin","scopes":["inference","keys:write"]}`)

	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	// typeInto focuses a field and types, as a keyboard user would.
	typeInto := func(sel, text string) chromedp.Action[chromedp.Void] {
		return chromedp.SendKeys(chromedp.CSS(sel), text)
	}

	// A keys:write key without usage:read sees key management and top-ups, not usage.
	run("sign in",
		chromedp.Navigate(base+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		typeInto("#key", admin.Key+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`body[data-loaded]`)),
		chromedp.WaitVisible(chromedp.CSS(`#keys tbody tr[data-key-id="`+admin.ID+`"]`)),
	)
	if got := eval(`String(document.getElementById("dash").hidden) + " " + String(document.getElementById("manage").hidden)`); got != "true false" {
		t.Fatalf("dash hidden / manage hidden = %s", got)
	}

	// Create a key: fill the form with the keyboard and press Enter on the submit button.
	run("create key",
		typeInto("#kf-name", "ci job"),
		typeInto("#kf-models", "btl-fast"),
		chromedp.SetValue(chromedp.CSS("#kf-rpm"), ""), typeInto("#kf-rpm", "30"),
		typeInto("#kf-budget", "5"),
		chromedp.SetValue(chromedp.CSS("#kf-period"), "day"),
		chromedp.SetValue(chromedp.CSS("#kf-expires"), "86400"),
		chromedp.Focus(chromedp.CSS("#kf-submit")),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#new-secret")),
	)
	secret := eval(`document.getElementById("new-secret-value").value`)
	if !strings.HasPrefix(secret, "btl_") || eval(`document.activeElement.id`) != "new-secret-value" {
		t.Fatalf("secret %q, focus on %s", secret, eval(`document.activeElement.id`))
	}
	_, raw := call(t, http.MethodGet, base+"/v1/api-keys", tl.ownerKey, "")
	var list struct {
		Data []keyJSON `json:"data"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	var created keyJSON
	for _, k := range list.Data {
		if len(k.Models) == 1 && k.Models[0] == "btl-fast" {
			created = k
		}
	}
	if created.ID == "" || created.RPM != 30 || created.BudgetUSD == nil || *created.BudgetUSD != 5 || *created.BudgetPeriod != "day" ||
		created.ExpiresAt == nil || time.Until(*created.ExpiresAt) < 23*time.Hour || created.ParentID == nil || *created.ParentID != admin.ID {
		t.Fatalf("the page created %+v (from %s)", created, raw)
	}
	if _, _, err := chatWith(keyClient(base, secret), "btl-fast", 0); err != nil {
		t.Fatalf("the new key does not work: %v", err)
	}
	// "Done" forgets the secret: it is shown once.
	run("dismiss secret", chromedp.Focus(chromedp.CSS("#new-secret-done")), chromedp.KeyEvent(kb.Enter), chromedp.WaitNotVisible(chromedp.CSS("#new-secret")))
	if v := eval(`document.getElementById("new-secret-value").value + document.body.innerText`); strings.Contains(v, secret) {
		t.Fatal("the secret is still in the page after Done")
	}

	// A scope the signed-in key lacks: the API's 403 message is shown.
	run("refused create",
		chromedp.Focus(chromedp.CSS(`#key-form input[value="usage:read"]`)), chromedp.KeyEvent(" "),
		chromedp.Focus(chromedp.CSS("#kf-submit")), chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#keys-error")),
	)
	if msg := eval(`document.getElementById("keys-error").textContent`); !strings.Contains(msg, "cannot grant scope 'usage:read'") {
		t.Fatalf("refused create: %q", msg)
	}

	// Revoke it: the row's button, then the in-place confirmation, both with Enter.
	row := `#keys tbody tr[data-key-id="` + created.ID + `"]`
	run("revoke",
		chromedp.Focus(chromedp.CSS(row+" button.revoke")), chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(row+" button.confirm-revoke")),
	)
	if eval(`document.activeElement.className`) != "danger confirm-revoke" {
		t.Fatalf("focus after Revoke: %s", eval(`document.activeElement.outerHTML`))
	}
	run("confirm revoke", chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.CSS(row+`[data-status="revoked"]`)))
	_, _, err := chatWith(keyClient(base, secret), "btl-fast", 0)
	apiErrorOf(t, err, http.StatusUnauthorized)

	// Start a top-up: the checkout link from the payment provider is offered and focused.
	run("top-up",
		chromedp.SetValue(chromedp.CSS("#topup-amount"), ""), typeInto("#topup-amount", "12.5"),
		chromedp.Focus(chromedp.CSS("#topup-submit")), chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#topup-link")),
	)
	if href := eval(`document.getElementById("topup-link").href`); href != "https://checkout.example/pay" || stripe.sessions.Load() != 1 {
		t.Fatalf("top-up link %q, %d checkout sessions", href, stripe.sessions.Load())
	}
	if eval(`document.activeElement.id`) != "topup-link" || !strings.Contains(eval(`document.getElementById("topup-result").textContent`), "$12.50 is ready") {
		t.Fatalf("top-up result: %q, focus %s", eval(`document.getElementById("topup-result").textContent`), eval(`document.activeElement.id`))
	}

	// The owner key sees both usage and key management.
	run("owner sign in",
		chromedp.Click(chromedp.CSS("#signout")),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		typeInto("#key", tl.ownerKey+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`#keys tbody tr[data-key-id="`+admin.ID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#stat-spend")),
	)
}
