package caddymodule

// Process-level tests of the closed-loop levers (issue 12): the real binary in front of the
// simulated upstream, which models the provider closely enough to prove a lever wrong.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// lastChat remembers the last chat-completions body the upstream received.
type lastChat struct {
	h    http.Handler
	mu   sync.Mutex
	body []byte
}

func (l *lastChat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/chat/completions") {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		l.mu.Lock()
		l.body = b
		l.mu.Unlock()
	}
	l.h.ServeHTTP(w, r)
}

func (l *lastChat) last() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.body
}

// cacheKey is the prompt_cache_key of the last chat body ("" when none).
func (l *lastChat) cacheKey() string {
	var b struct {
		Key string `json:"prompt_cache_key"`
	}
	_ = json.Unmarshal(l.last(), &b)
	return b.Key
}

// leverGateway starts the gateway binary with the given providers in front of the upstream,
// with a SQLite ledger holding one workspace per name; it returns the base URL and the keys.
func leverGateway(t *testing.T, upstream http.Handler, providers string, workspaces ...string) (string, *httptest.Server, []string) {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	dir := t.TempDir()
	db := filepath.Join(dir, "btl.db")
	store, err := ledger.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, w := range workspaces {
		_, key, err := store.CreateWorkspace(context.Background(), w, 100*ledger.Credit)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	store.Close()
	block := fmt.Sprintf("btl {\n\t\tstorage sqlite %s\n\t\tspool_dir %s\n%s\n\t}", db, filepath.Join(dir, "spool"),
		strings.ReplaceAll(providers, "UPSTREAM", up.URL))
	return startProc(t, dir, block).base, up, keys
}

func leverClient(base, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

// TestProcessRevertedFactAnsweredFromNewestCopy: a conversation pastes a document (code A),
// then its update (code B), then the original again. Dedupe must not turn the last copy into
// a reference to the first: the newest literal copy would then be B's, and the model — the
// simulator answers from the newest copy of a fact in its prompt — would answer B.
func TestProcessRevertedFactAnsweredFromNewestCopy(t *testing.T) {
	sim := &lastChat{h: simulated.New(simulated.Options{})}
	base, _, keys := leverGateway(t, sim, `		provider sim simulated {
			base_url UPSTREAM/v1
			models gpt-4.1-mini
		}`, "facts")
	client := leverClient(base, keys[0])
	filler := strings.Repeat("Vault procedures cover rotation, escrow and audit of every access code in detail. ", 8)
	doc := func(code string) string {
		return fmt.Sprintf("<document source=\"kb/vault-7\">\n%s The access code for vault 7 is %s. %s\n</document>", filler, code, filler)
	}
	other := "<document source=\"kb/ops\">\n" + strings.Repeat("Operations run nightly backups and weekly restores of every region. ", 12) + "\n</document>"
	question := "\nWhat is the access code for vault 7 now? [sim:recall=access code for vault 7 is]"
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Answer from the newest documents provided.")}
	for i, code := range []string{"4417", "9902", "4417"} {
		msgs = append(msgs, openai.UserMessage("Context:\n"+doc(code)+"\n"+other+question))
		resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "sim/gpt-4.1-mini", Messages: msgs, MaxTokens: openai.Int(100)})
		if err != nil {
			t.Fatal(err)
		}
		answer := resp.Choices[0].Message.Content
		if !strings.Contains(answer, "vault 7 is "+code) {
			t.Fatalf("turn %d: answered %q, want code %s from the newest copy", i, answer, code)
		}
		msgs = append(msgs, openai.AssistantMessage(answer))
	}
	// Dedupe still works where it is unambiguous: the ops document, repeated unchanged, is a
	// reference in the newest message too, though the reference the gateway wrote for it on
	// the second turn carries its label with other text (that is not another version of it).
	var sent struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	if err := json.Unmarshal(sim.last(), &sent); err != nil {
		t.Fatal(err)
	}
	if newest := sent.Messages[len(sent.Messages)-1].Content; !strings.Contains(newest, "[duplicate of the document \"source='kb/ops'\"") ||
		!strings.Contains(newest, "vault 7 is 4417") {
		t.Fatalf("the newest message should reference the unchanged document and keep the reverted one literal:\n%.3000s", newest)
	}
}

// TestProcessClaudeCapConservativeUntilJustified: a Claude request without max_tokens and
// without thinking gets at most 4,096 (what a careful direct caller sets) until the answers
// that finished on their own show that longer ones are normal; asking for thinking gets room
// for it; an answer the gateway's cap cut is flagged.
func TestProcessClaudeCapConservativeUntilJustified(t *testing.T) {
	sim := simulated.New(simulated.Options{})
	base, _, keys := leverGateway(t, sim, `		provider anth anthropic {
			base_url UPSTREAM
			api_key sk-ant-test
		}`, "caps", "other")
	sent := func() int64 {
		t.Helper()
		r, ok := sim.LastAnthropicRequest()
		if !ok {
			t.Fatal("no Anthropic request")
		}
		var b struct {
			MaxTokens int64 `json:"max_tokens"`
		}
		_ = json.Unmarshal(r.Body, &b)
		return b.MaxTokens
	}
	chat := func(key, body string) http.Header {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header
	}
	plain := func(words string) string {
		return `{"model":"anth/claude-sonnet-4-5","messages":[{"role":"user","content":"` + words + `"}]}`
	}
	// A runaway answer stops at the conservative cap, and says so.
	h := chat(keys[0], plain("Rewrite the whole module. [sim:answer_tokens=30000]"))
	if got := sent(); got != 4096 {
		t.Fatalf("max_tokens %d without thinking, want 4096", got)
	}
	if h.Get("X-Btl-Capped") != "true" {
		t.Fatal("an answer cut by the gateway's cap is not flagged")
	}
	// Thinking asked for: room for it.
	chat(keys[0], `{"model":"anth/claude-sonnet-4-5","reasoning_effort":"medium","messages":[{"role":"user","content":"Think."}]}`)
	if got := sent(); got != 32768 {
		t.Fatalf("max_tokens %d with thinking, want 32768", got)
	}
	// Long answers that finish on their own, fewer than the evidence needs: the cap holds.
	for i := range 31 {
		chat(keys[0], plain(fmt.Sprintf("Explain part %d at length. [sim:answer_tokens=3500]", i)))
		if got := sent(); got != 4096 {
			t.Fatalf("request %d: max_tokens %d before the evidence justifies more", i, got)
		}
	}
	// The 32nd natural answer justifies a higher cap (p99 3,500 × 1.5, rounded up).
	chat(keys[0], plain("Explain part 31 at length. [sim:answer_tokens=3500]"))
	chat(keys[0], plain("And the summary. [sim:answer_tokens=3500]"))
	if got := sent(); got != 5376 {
		t.Fatalf("max_tokens %d after 32 natural 3,500-token answers, want 5376", got)
	}
	// Another workspace on the same model learned nothing from this one.
	chat(keys[1], plain("Hello"))
	if got := sent(); got != 4096 {
		t.Fatalf("another workspace got max_tokens %d", got)
	}
}

// TestProcessShardingFollowsEvidence: prompt_cache_key sharding starts only after the
// upstream's reported cache hits fell, and is undone where it does not help. Three models of
// the upstream (providers/simulated/openai_cache.go), one workspace each: a cache scoped by
// key never loses hits, so the key is never sharded; per-machine caches that overflow lose
// hits, and shards (each under the machine's rate) win them back, so the shards stay; and an
// upstream that routes by prefix alone loses hits that shards cannot win back, so the trial is
// undone. The machines here take 30 requests a minute; the test sends about 18 a second, so a
// route overflows after its first 30 and each of 16 shards stays under that for the test.
func TestProcessShardingFollowsEvidence(t *testing.T) {
	sim := simulated.New(simulated.Options{MachineRPM: 30})
	rec := &lastChat{h: sim}
	base, _, keys := leverGateway(t, rec, `		provider oai openai {
			base_url UPSTREAM/v1
			api_key sk-test
			models gpt-4.1
		}`, "by-key", "overflow", "ignores-key")
	system := strings.Repeat("The refund policy covers annual and monthly plans, prorated by day of service. ", 80)
	run := func(key string, mode simulated.OpenAICache, n int) (keysSeen []string, lastCached []int64) {
		t.Helper()
		sim.SetOpenAICache(mode)
		client := leverClient(base, key)
		for i := range n {
			resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: "oai/gpt-4.1", MaxTokens: openai.Int(20),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage(fmt.Sprintf("user %d asks about refunds", i))}})
			if err != nil {
				t.Fatal(err)
			}
			lastCached = append(lastCached, resp.Usage.PromptTokensDetails.CachedTokens)
			keysSeen = append(keysSeen, rec.cacheKey())
			time.Sleep(50 * time.Millisecond)
		}
		return keysSeen, lastCached
	}
	sharded := func(k string) bool { return strings.Contains(k, "-s") }
	count := func(ks []string, from, to int) (n int) {
		for _, k := range ks[from:to] {
			if sharded(k) {
				n++
			}
		}
		return n
	}

	t.Run("cache scoped by key: never sharded", func(t *testing.T) {
		ks, _ := run(keys[0], simulated.CacheByKey, 80)
		if n := count(ks, 0, len(ks)); n > 0 {
			t.Fatalf("%d requests sharded where the cache never lost a hit", n)
		}
	})
	t.Run("overflow: sharded after the drop, kept", func(t *testing.T) {
		ks, cached := run(keys[1], simulated.CacheOverflow, 140)
		if n := count(ks, 0, 30); n > 0 {
			t.Fatalf("sharded while the cache still hit: %v", ks[:30])
		}
		if n := count(ks, 120, 140); n != 20 {
			t.Fatalf("shards not kept at the end (%d of 20 sharded): %v", n, ks[120:])
		}
		hits := 0
		for _, c := range cached[120:] {
			if c > 0 {
				hits++
			}
		}
		if hits < 18 {
			t.Fatalf("shards did not win the hits back: %d of 20 cached", hits)
		}
	})
	t.Run("routing ignores the key: trial undone", func(t *testing.T) {
		ks, _ := run(keys[2], simulated.CacheOverflowIgnoresKey, 140)
		if count(ks, 0, 140) == 0 {
			t.Fatal("the hit drop did not start a trial")
		}
		if n := count(ks, 120, 140); n > 0 {
			t.Fatalf("sharding that did not help was not undone: %v", ks[120:])
		}
	})
}
