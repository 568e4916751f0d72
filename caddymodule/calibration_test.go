package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/tokenopt/tokens"
)

// TestCutStreamBilledAtCalibratedRate: an upstream whose tokenizer counts twice the gateway's
// four-bytes-a-token estimate teaches the calibration so; a stream it then cuts before
// reporting usage is billed for about twice the naive estimate, not for the naive one.
func TestCutStreamBilledAtCalibratedRate(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		prompt := len(b) / 2 // twice len/4
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"calib-model","choices":[{"index":0,"delta":{"role":"assistant","content":"partial"},"finish_reason":null}]}`+"\n\n")
			return // cut: no finish, no usage, no [DONE]
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","created":1,"model":"calib-model","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":1,"total_tokens":%d}}`, prompt, prompt+1)
	}))
	defer up.Close()
	base, tl := gatewayBefore(t, up.URL, "calib-model")
	question := strings.Repeat("How are refunds issued for annual plans? ", 40)
	body := `{"model":"up/calib-model","max_tokens":50,"messages":[{"role":"user","content":"` + question + `"}]}`
	for range 5 {
		if st, _, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(body)); st != 200 {
			t.Fatalf("%d %s", st, raw)
		}
	}
	stream := strings.Replace(body, `"max_tokens":50,`, `"max_tokens":50,"stream":true,`, 1)
	st, _, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json", strings.NewReader(stream))
	if st != 200 || !strings.Contains(string(raw), "partial") {
		t.Fatalf("%d %s", st, raw)
	}
	store, err := ledger.OpenSQLite(context.Background(), tl.db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rows := waitRows(t, store, tl.workspace, 6, 5*time.Second)
	var cut *ledger.Row
	for i := range rows {
		if rows[i].Stream {
			cut = &rows[i]
		}
	}
	if cut == nil {
		t.Fatalf("no row for the cut stream among %d", len(rows))
	}
	naive := int64(len(stream)+3) / 4
	if got := cut.InputUncached; got < naive*17/10 || got > naive*23/10 {
		t.Fatalf("cut stream billed %d input tokens; naive estimate %d, calibrated should be about %d", got, naive, 2*naive)
	}
}

// calibrationRuns numbers TestCountTokensLearnsTheModelsTokenizer's runs.
var calibrationRuns atomic.Int64

// TestCountTokensLearnsTheModelsTokenizer: /v1/messages/count_tokens counts with tiktoken and
// corrects by what the model's upstream reported for earlier requests. Here the upstream's
// tokenizer counts 1.5 times tiktoken's, as a non-OpenAI tokenizer might.
func TestCountTokensLearnsTheModelsTokenizer(t *testing.T) {
	// The calibration is process-wide and per model: a model no other test (nor an earlier
	// run of this one, under -count) has used.
	model := fmt.Sprintf("calibrated-model-%d", calibrationRuns.Add(1))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		prompt := tokens.CountChat(model, b) * 3 / 2
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","created":1,"model":"%s","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":1,"total_tokens":%d}}`, model, prompt, prompt+1)
	}))
	defer up.Close()
	base, _ := gatewayBefore(t, up.URL, model)
	text := strings.Repeat("Refunds for annual plans are prorated by the remaining months. ", 30)
	count := func() int64 {
		st, _, _, raw := postRaw(t, base+"/v1/messages/count_tokens", "application/json",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"`+text+`"}]}`))
		var out struct {
			InputTokens int64 `json:"input_tokens"`
		}
		if st != 200 || json.Unmarshal(raw, &out) != nil {
			t.Fatalf("%d %s", st, raw)
		}
		return out.InputTokens
	}
	plain := int64(tokens.Count(model, text)) + 3
	if got := count(); got != plain {
		t.Fatalf("before any usage: %d, want tiktoken's %d", got, plain)
	}
	if st, _, _, raw := postRaw(t, base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"up/`+model+`","max_tokens":20,"messages":[{"role":"user","content":"`+text+`"}]}`)); st != 200 {
		t.Fatalf("%d %s", st, raw)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := count()
		if got >= plain*14/10 && got <= plain*16/10 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after usage at 1.5x tiktoken: %d, tiktoken alone %d", got, plain)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
