package payments

import (
	"context"
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
	payload := []byte(`{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"payment_status":"paid","amount_total":1000,"currency":"usd","metadata":{"workspace_id":"ws_1"}}}}`)
	ev, err := s.VerifyWebhook(payload, Sign("whsec_test", payload, now))
	if err != nil {
		t.Fatal(err)
	}
	if ws, cents, ok := ev.PaidCredit(); !ok || ws != "ws_1" || cents != 1000 {
		t.Fatalf("%s %d %v", ws, cents, ok)
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
