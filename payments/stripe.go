// Package payments talks to a Stripe-compatible payment API: it creates Checkout Sessions for
// credit top-ups and verifies webhook signatures. It is stdlib only and knows nothing of Caddy
// or the ledger; the caller credits the workspace, once per payment (Payment.Key).
package payments

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Stripe is a client for the parts of Stripe's API the gateway uses.
type Stripe struct {
	SecretKey     string
	WebhookSecret string
	// BaseURL defaults to https://api.stripe.com.
	BaseURL string
	// SuccessURL and CancelURL are where Checkout sends the buyer afterwards.
	SuccessURL, CancelURL string
	// Tolerance bounds the age of a webhook signature [5m].
	Tolerance time.Duration
	Client    *http.Client
	Now       func() time.Time
}

// Session is a created Checkout Session.
type Session struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

// ErrBadSignature means a webhook did not come from the payment provider (or is too old).
var ErrBadSignature = errors.New("payments: invalid webhook signature")

// ErrMalformedEvent is a correctly signed webhook body that is not an event.
var ErrMalformedEvent = errors.New("payments: malformed event")

func (s *Stripe) base() string {
	if s.BaseURL != "" {
		return strings.TrimRight(s.BaseURL, "/")
	}
	return "https://api.stripe.com"
}

func (s *Stripe) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// CreateCheckout starts a payment of cents US cents for workspace ws. The workspace id rides
// in client_reference_id and metadata so the webhook can credit it.
func (s *Stripe) CreateCheckout(ctx context.Context, ws string, cents int64) (Session, error) {
	if cents <= 0 {
		return Session{}, fmt.Errorf("payments: amount must be positive")
	}
	form := url.Values{}
	form.Set("mode", "payment")
	form.Set("client_reference_id", ws)
	form.Set("metadata[workspace_id]", ws)
	form.Set("line_items[0][quantity]", "1")
	form.Set("line_items[0][price_data][currency]", "usd")
	form.Set("line_items[0][price_data][unit_amount]", strconv.FormatInt(cents, 10))
	form.Set("line_items[0][price_data][product_data][name]", "BTL Runtime credits")
	success, cancel := s.SuccessURL, s.CancelURL
	if success == "" {
		success = "https://example.invalid/btl/top-up/success"
	}
	if cancel == "" {
		cancel = "https://example.invalid/btl/top-up/cancel"
	}
	form.Set("success_url", success)
	form.Set("cancel_url", cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base()+"/v1/checkout/sessions", strings.NewReader(form.Encode()))
	if err != nil {
		return Session{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.SecretKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Session{}, fmt.Errorf("payments: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return Session{}, fmt.Errorf("payments: checkout session: status %d", resp.StatusCode)
	}
	var out Session
	if err := json.Unmarshal(raw, &out); err != nil || out.ID == "" || out.URL == "" {
		return Session{}, fmt.Errorf("payments: unexpected checkout session response")
	}
	return out, nil
}

// Event is the part of a webhook event the gateway acts on.
type Event struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Data struct {
		Object struct {
			ID                string            `json:"id"`
			PaymentStatus     string            `json:"payment_status"`
			AmountTotal       int64             `json:"amount_total"`
			Currency          string            `json:"currency"`
			ClientReferenceID string            `json:"client_reference_id"`
			Metadata          map[string]string `json:"metadata"`
		} `json:"object"`
	} `json:"data"`
}

// VerifyWebhook checks the Stripe-Signature header (t=<unix>,v1=<hex hmac>…) over
// "t.payload" with the webhook secret, in constant time, and the timestamp's age; then
// decodes the event.
func (s *Stripe) VerifyWebhook(payload []byte, header string) (Event, error) {
	var ts int64
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts, _ = strconv.ParseInt(v, 10, 64)
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	if ts == 0 || len(sigs) == 0 || s.WebhookSecret == "" {
		return Event{}, ErrBadSignature
	}
	tol := s.Tolerance
	if tol <= 0 {
		tol = 5 * time.Minute
	}
	if age := s.now().Sub(time.Unix(ts, 0)); age > tol || age < -tol {
		return Event{}, ErrBadSignature
	}
	mac := hmac.New(sha256.New, []byte(s.WebhookSecret))
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte("."))
	mac.Write(payload)
	want := mac.Sum(nil)
	ok := false
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			ok = true
		}
	}
	if !ok {
		return Event{}, ErrBadSignature
	}
	var ev Event
	if err := json.Unmarshal(payload, &ev); err != nil || ev.ID == "" {
		// A signed body that does not decode, e.g. an amount beyond int64.
		return Event{}, fmt.Errorf("%w: %v", ErrMalformedEvent, err)
	}
	return ev, nil
}

// Sign computes a Stripe-Signature header for payload at time t (for tests and fakes).
func Sign(secret string, payload []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(payload)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// MaxPaymentCents bounds the amount a webhook may credit: 100× the largest top-up the
// gateway starts (taxes and fees may add to a session's total, never that much). Anything
// above is no payment this gateway asked for.
const MaxPaymentCents = 100 * 1_000_000

// ErrAmountOutOfRange is a paid checkout whose amount_total the gateway refuses to credit.
var ErrAmountOutOfRange = errors.New("payments: amount_total out of range")

// Payment is a completed, paid checkout to credit.
type Payment struct {
	WorkspaceID string
	Cents       int64
	// Key is the payment's idempotency key: the checkout session's id, so that every event
	// about one payment (completed, async_payment_succeeded, the provider's retries) credits
	// it once.
	Key string
}

// PaidCredit returns the payment of a completed, paid checkout; ok=false for every other
// event, and ErrAmountOutOfRange for an amount the gateway must not credit.
func (ev Event) PaidCredit() (p Payment, ok bool, err error) {
	o := ev.Data.Object
	if ev.Type != "checkout.session.completed" && ev.Type != "checkout.session.async_payment_succeeded" {
		return Payment{}, false, nil
	}
	if o.PaymentStatus != "paid" || !strings.EqualFold(o.Currency, "usd") || o.ID == "" {
		return Payment{}, false, nil
	}
	if o.AmountTotal <= 0 || o.AmountTotal > MaxPaymentCents {
		return Payment{}, false, fmt.Errorf("%w: %d cents", ErrAmountOutOfRange, o.AmountTotal)
	}
	ws := o.Metadata["workspace_id"]
	if ws == "" {
		ws = o.ClientReferenceID
	}
	return Payment{WorkspaceID: ws, Cents: o.AmountTotal, Key: "stripe:checkout_session:" + o.ID}, ws != "", nil
}
