package caddymodule

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// sendAs posts a chat body with the given key and extra headers, and returns the status, the
// x-btl-cache outcome, the cost header and the answer's text.
func sendAs(t *testing.T, base, key, body string, hdr map[string]string) (int, string, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var v struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	_ = json.Unmarshal(raw, &v)
	text := ""
	if len(v.Choices) > 0 {
		text = v.Choices[0].Message.Content
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, resp.Header.Get("X-Btl-Cache"), resp.Header.Get("X-Btl-Cost-Usd"), text
}

// TestResponseCacheOnByDefault runs the defaults of Caddyfile.example (a bare btl_optimize):
// a repeated deterministic request is answered from memory, free, within its workspace only;
// a sampled one (no temperature, temperature 0.7, n 2, top_p 0.9) reaches the upstream every
// time and gets a fresh draw; the per-request header, the Caddyfile and shadow mode turn the
// cache off; a workspace can opt in to replayed samples.
func TestResponseCacheOnByDefault(t *testing.T) {
	tl := newTestLedger(t, 10*ledger.Credit)
	keyB := tl.tenant(t, "tenant-b")
	sim := simulated.New(simulated.Options{Sampling: true})
	up := httptest.NewServer(sim)
	defer up.Close()
	btl := tl.withStorage(`btl {
		provider sim simulated {
			base_url ` + up.URL + `/v1
			models gpt-4o-mini
		}
	}`)
	calls := func() int64 { return sim.Stats().Requests }

	t.Run("defaults", func(t *testing.T) {
		base := startGateway(t, btl, fullChain)
		det := `{"model":"sim/gpt-4o-mini","temperature":0,"max_tokens":50,"messages":[{"role":"user","content":"Classify ticket T-1: refund request"}]}`
		before := calls()
		_, o1, _, a1 := sendAs(t, base, tl.ownerKey, det, nil)
		_, o2, cost2, a2 := sendAs(t, base, tl.ownerKey, det, nil)
		if o1 != "miss" || o2 != "hit" || calls()-before != 1 {
			t.Fatalf("deterministic repeat: outcomes %s/%s, upstream calls %d (want miss/hit, 1)", o1, o2, calls()-before)
		}
		if a1 == "" || a1 != a2 || cost2 != "0.000000" {
			t.Fatalf("replay differs or was billed: %q vs %q, cost %s", a1, a2, cost2)
		}
		// An answer the gateway's own cap cut is not replayed: each call reaches the
		// upstream and is flagged.
		runaway := `{"model":"sim/gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Rewrite the whole module. [sim:answer_tokens=30000]"}]}`
		r0 := calls()
		for i := range 2 {
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(runaway))
			req.Header.Set("Authorization", "Bearer "+tl.ownerKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Btl-Capped") != "true" || resp.Header.Get("X-Btl-Cache") == "hit" {
				t.Fatalf("capped call %d: status %d, capped %q, cache %q", i, resp.StatusCode, resp.Header.Get("X-Btl-Capped"), resp.Header.Get("X-Btl-Cache"))
			}
		}
		if n := calls() - r0; n != 2 {
			t.Fatalf("capped answers: %d upstream calls for 2 requests", n)
		}
		before += 2
		// Another workspace never reads the first one's answers.
		if _, o, _, _ := sendAs(t, base, keyB, det, nil); o != "miss" || calls()-before != 2 {
			t.Fatalf("tenant B: outcome %s, upstream calls %d (want miss, 2)", o, calls()-before)
		}
		// Sampled requests are independent draws: each reaches the upstream. (At temperature 0
		// the simulator answers the same however top_p or n are set; a caller who set them
		// still asked for draws, and gets what the upstream gives each time.)
		for _, c := range []struct {
			name, body string
			fresh      bool // the upstream draws a fresh answer each time
		}{
			{"no temperature", `{"model":"sim/gpt-4o-mini","messages":[{"role":"user","content":"Name a colour"}]}`, true},
			{"temperature 0.7", `{"model":"sim/gpt-4o-mini","temperature":0.7,"messages":[{"role":"user","content":"Name a colour"}]}`, true},
			{"n 2, temperature 0", `{"model":"sim/gpt-4o-mini","temperature":0,"n":2,"messages":[{"role":"user","content":"Name a colour"}]}`, false},
			{"top_p 0.9, temperature 0", `{"model":"sim/gpt-4o-mini","temperature":0,"top_p":0.9,"messages":[{"role":"user","content":"Name a colour"}]}`, false},
		} {
			before := calls()
			answers := map[string]bool{}
			for range 3 {
				_, o, _, a := sendAs(t, base, tl.ownerKey, c.body, nil)
				if o == "hit" {
					t.Fatalf("%s: a sampled request was answered from the cache", c.name)
				}
				answers[a] = true
			}
			if got := calls() - before; got != 3 {
				t.Fatalf("%s: %d upstream calls for 3 sampled requests", c.name, got)
			}
			if c.fresh && len(answers) != 3 {
				t.Fatalf("%s: 3 sampled requests got %d distinct answers", c.name, len(answers))
			}
		}
		// Anthropic Messages ingress: the answer is translated back by the route, so a repeat is
		// an Anthropic message too, whatever the cache does.
		msg := `{"model":"sim/gpt-4o-mini","max_tokens":50,"temperature":0,"messages":[{"role":"user","content":"Classify ticket T-9"}]}`
		postMessages := func(body string) (*http.Response, []byte) {
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
			req.Header.Set("X-Api-Key", tl.ownerKey)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Anthropic-Version", "2023-06-01")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, raw
		}
		for i := range 2 {
			resp, raw := postMessages(msg)
			var m struct {
				Type    string `json:"type"`
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(raw, &m) != nil || m.Type != "message" || len(m.Content) == 0 || m.Content[0].Text == "" {
				t.Fatalf("messages call %d (x-btl-cache %s): %d %s", i, resp.Header.Get("X-Btl-Cache"), resp.StatusCode, raw)
			}
		}
		// ... and replayed as a stream, Anthropic's events.
		resp, raw := postMessages(strings.Replace(msg, `{"model"`, `{"stream":true,"model"`, 1))
		if resp.Header.Get("X-Btl-Cache") != "hit" || !strings.Contains(string(raw), "event: message_start") ||
			!strings.Contains(string(raw), "event: message_stop") || strings.Contains(string(raw), "chat.completion") {
			t.Fatalf("messages stream replay (x-btl-cache %s): %s", resp.Header.Get("X-Btl-Cache"), raw)
		}
		// The caller can skip the cache for one request.
		fresh := strings.Replace(det, "T-1", "T-2", 1)
		before = calls()
		sendAs(t, base, tl.ownerKey, fresh, nil)
		if _, o, _, _ := sendAs(t, base, tl.ownerKey, fresh, map[string]string{"X-Btl-Optimize": "-response_cache"}); o == "hit" || calls()-before != 2 {
			t.Fatalf("x-btl-optimize -response_cache: outcome %s, upstream calls %d", o, calls()-before)
		}
	})

	// A workspace that opted in (cache_sampled) gets sampled answers replayed; another does not.
	t.Run("cache_sampled", func(t *testing.T) {
		base := startGateway(t, btl, "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tworkspace "+tl.workspace+" {\n\t\t\tcache_sampled\n\t\t}\n\t}\n\tbtl_route\n")
		sampled := `{"model":"sim/gpt-4o-mini","temperature":0.7,"messages":[{"role":"user","content":"Name a fruit"}]}`
		before := calls()
		_, o1, _, a1 := sendAs(t, base, tl.ownerKey, sampled, nil)
		_, o2, _, a2 := sendAs(t, base, tl.ownerKey, sampled, nil)
		if o1 != "miss" || o2 != "hit" || a1 != a2 || calls()-before != 1 {
			t.Fatalf("opted-in workspace: outcomes %s/%s, upstream calls %d", o1, o2, calls()-before)
		}
		for range 2 {
			if _, o, _, _ := sendAs(t, base, keyB, sampled, nil); o == "hit" {
				t.Fatal("a workspace that did not opt in got a replayed sample")
			}
		}
		if got := calls() - before; got != 3 {
			t.Fatalf("upstream calls %d, want 3", got)
		}
	})

	// Off, and in shadow mode (which computes savings and changes nothing).
	for _, off := range []string{"disable response_cache", "response_cache off", "shadow"} {
		t.Run(off, func(t *testing.T) {
			base := startGateway(t, btl, "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\t"+off+"\n\t}\n\tbtl_route\n")
			det := `{"model":"sim/gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Classify ticket T-3: ` + off + `"}]}`
			before := calls()
			for range 2 {
				if _, o, _, _ := sendAs(t, base, tl.ownerKey, det, nil); o == "hit" || o == "miss" {
					t.Fatalf("cache consulted with %q: outcome %s", off, o)
				}
			}
			if got := calls() - before; got != 2 {
				t.Fatalf("%q: %d upstream calls for 2 requests", off, got)
			}
		})
	}
}
