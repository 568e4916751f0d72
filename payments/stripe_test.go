package payments

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

func TestVerifyWebhook(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := &Stripe{WebhookSecret: "whsec_test", Now: func() time.Time { return now }}
	payload := []byte(`{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"id":"cs_1","payment_status":"paid","amount_total":1000,"currency":"usd","metadata":{"workspace_id":"ws_1"}}}}`)
	ev, err := s.VerifyWebhook(payload, Sign("whsec_test", payload, now))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok, err := ev.PaidCredit(); !ok || err != nil || p.WorkspaceID != "ws_1" || p.Cents != 1000 {
		t.Fatalf("%+v %v %v", p, ok, err)
	}
	bad := []string{
		Sign("other", payload, now),                           // wrong secret
		Sign("whsec_test", payload, now.Add(-10*time.Minute)), // too old
		"t=1,v1=zz",
		"",
	}
	for _, h := range bad {
		if _, err := s.VerifyWebhook(payload, h); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("%q accepted", h)
		}
	}
	tampered := append([]byte{}, payload...)
	tampered[len(tampered)-5] = '9'
	if _, err := s.VerifyWebhook(tampered, Sign("whsec_test", payload, now)); !errors.Is(err, ErrBadSignature) {
		t.Fatal("tampered payload accepted")
	}
}

func TestCreateCheckout(t *testing.T) {
	var form url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/checkout/sessions" || r.Header.Get("Authorization") != "Bearer sk_test" {
			w.WriteHeader(401)
			return
		}
		b, _ := io.ReadAll(r.Body)
		form, _ = url.ParseQuery(string(b))
		io.WriteString(w, `{"id":"cs_1","url":"https://pay.example/cs_1"}`)
	}))
	defer srv.Close()
	s := &Stripe{SecretKey: "sk_test", BaseURL: srv.URL}
	sess, err := s.CreateCheckout(context.Background(), "ws_9", 2500)
	if err != nil || sess.ID != "cs_1" {
		t.Fatal(sess, err)
	}
	if form.Get("metadata[workspace_id]") != "ws_9" || form.Get("line_items[0][price_data][unit_amount]") != "2500" {
		t.Fatal(form)
	}
}

// TestPaidCreditOncePerPayment (issue 13 item 15): every event about one checkout session
// carries the same idempotency key, so the grant happens once; amounts out of range and
// events that are not paid checkouts credit nothing.
func TestPaidCreditOncePerPayment(t *testing.T) {
	event := func(id, typ, object string) Event {
		var ev Event
		if err := json.Unmarshal([]byte(`{"id":"`+id+`","type":"`+typ+`","data":{"object":`+object+`}}`), &ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	paid := `{"id":"cs_42","payment_status":"paid","amount_total":2500,"currency":"usd","payment_intent":"pi_9","metadata":{"workspace_id":"ws_1"}}`
	keys := map[string]bool{}
	for _, ev := range []Event{
		event("evt_a", "checkout.session.completed", paid),
		event("evt_b", "checkout.session.async_payment_succeeded", paid),
		event("evt_c", "checkout.session.completed", paid), // a re-sent event with a new id
	} {
		p, ok, err := ev.PaidCredit()
		if !ok || err != nil || p.Cents != 2500 || p.WorkspaceID != "ws_1" {
			t.Fatalf("%s: %+v %v %v", ev.ID, p, ok, err)
		}
		keys[p.Key] = true
	}
	if len(keys) != 1 {
		t.Fatalf("one payment, %d idempotency keys: %v", len(keys), keys)
	}
	for name, tc := range map[string]struct {
		ev      Event
		rangeEr bool
	}{
		"unpaid":        {ev: event("e", "checkout.session.completed", `{"id":"cs_1","payment_status":"unpaid","amount_total":100,"currency":"usd","metadata":{"workspace_id":"w"}}`)},
		"other type":    {ev: event("e", "payment_intent.succeeded", paid)},
		"eur":           {ev: event("e", "checkout.session.completed", `{"id":"cs_1","payment_status":"paid","amount_total":100,"currency":"eur","metadata":{"workspace_id":"w"}}`)},
		"no session id": {ev: event("e", "checkout.session.completed", `{"payment_status":"paid","amount_total":100,"currency":"usd","metadata":{"workspace_id":"w"}}`)},
		"huge":          {ev: event("e", "checkout.session.completed", `{"id":"cs_1","payment_status":"paid","amount_total":922337203685477,"currency":"usd","metadata":{"workspace_id":"w"}}`), rangeEr: true},
		"negative":      {ev: event("e", "checkout.session.completed", `{"id":"cs_1","payment_status":"paid","amount_total":-5,"currency":"usd","metadata":{"workspace_id":"w"}}`), rangeEr: true},
	} {
		p, ok, err := tc.ev.PaidCredit()
		if ok || (err != nil) != tc.rangeEr || (tc.rangeEr && !errors.Is(err, ErrAmountOutOfRange)) {
			t.Errorf("%s: %+v %v %v", name, p, ok, err)
		}
	}
}

// TestWebhookAmountBeyondInt64 is malformed, not a signature failure.
func TestWebhookAmountBeyondInt64(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := &Stripe{WebhookSecret: "whsec_test", Now: func() time.Time { return now }}
	payload := []byte(`{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"id":"cs_1","payment_status":"paid","amount_total":99999999999999999999999,"currency":"usd"}}}`)
	if _, err := s.VerifyWebhook(payload, Sign("whsec_test", payload, now)); !errors.Is(err, ErrMalformedEvent) {
		t.Fatalf("err = %v, want ErrMalformedEvent", err)
	}
}
