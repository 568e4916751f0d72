package main

// What reached the upstream and what it answered, recorded at the simulator's door: the
// quality checks read the request bodies, and both sides of every row are priced from the
// upstream's own usage in its own format, by the same code — never from the gateway's ledger.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
)

// exchange is one upstream call.
type exchange struct {
	path         string
	body, answer []byte
	status       int
}

// recorder wraps the simulator and keeps every chat call.
type recorder struct {
	h        http.Handler
	mu       sync.Mutex
	x        []exchange
	inFlight atomic.Int64
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	b, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(b))
	tw := &teeWriter{ResponseWriter: w, status: http.StatusOK}
	r.h.ServeHTTP(tw, req)
	if req.URL.Path == "/token" || strings.HasPrefix(req.URL.Path, "/_sim") {
		return
	}
	r.mu.Lock()
	r.x = append(r.x, exchange{path: req.URL.Path, body: b, answer: tw.buf.Bytes(), status: tw.status})
	r.mu.Unlock()
}

type teeWriter struct {
	http.ResponseWriter
	buf    bytes.Buffer
	status int
}

func (t *teeWriter) WriteHeader(c int) { t.status = c; t.ResponseWriter.WriteHeader(c) }
func (t *teeWriter) Write(b []byte) (int, error) {
	t.buf.Write(b)
	return t.ResponseWriter.Write(b)
}
func (t *teeWriter) Flush() { _ = http.NewResponseController(t.ResponseWriter).Flush() }

// take returns the calls recorded so far and starts over. A client can have its answer before
// the upstream's handler has returned, so it waits for the calls still in the handler.
func (r *recorder) take() []exchange {
	for deadline := time.Now().Add(10 * time.Second); r.inFlight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	x := r.x
	r.x = nil
	return x
}

// usageOf reads the usage of a non-stream answer in any of the simulated formats into the
// normal form.
func usageOf(answer []byte) providers.Usage {
	var v struct {
		Usage *struct {
			// OpenAI
			PromptTokens        int64 `json:"prompt_tokens"`
			CompletionTokens    int64 `json:"completion_tokens"`
			PromptTokensDetails struct {
				CachedTokens int64 `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
			// Anthropic
			InputTokens   int64 `json:"input_tokens"`
			OutputTokens  int64 `json:"output_tokens"`
			CacheRead     int64 `json:"cache_read_input_tokens"`
			CacheCreation *struct {
				W5m int64 `json:"ephemeral_5m_input_tokens"`
				W1h int64 `json:"ephemeral_1h_input_tokens"`
			} `json:"cache_creation"`
			CacheCreationTotal int64 `json:"cache_creation_input_tokens"`
			// Bedrock
			BInput      int64 `json:"inputTokens"`
			BOutput     int64 `json:"outputTokens"`
			BCacheRead  int64 `json:"cacheReadInputTokens"`
			BCacheWrite int64 `json:"cacheWriteInputTokens"`
		} `json:"usage"`
		Meta *struct {
			Prompt     int64 `json:"promptTokenCount"`
			Cached     int64 `json:"cachedContentTokenCount"`
			Candidates int64 `json:"candidatesTokenCount"`
			Thoughts   int64 `json:"thoughtsTokenCount"`
		} `json:"usageMetadata"`
	}
	if json.Unmarshal(answer, &v) != nil {
		return providers.Usage{}
	}
	if m := v.Meta; m != nil { // Gemini: the prompt count includes cached tokens
		return providers.Usage{InputUncached: m.Prompt - m.Cached, CacheRead: m.Cached, Output: m.Candidates + m.Thoughts}
	}
	u := v.Usage
	if u == nil {
		return providers.Usage{}
	}
	switch {
	case u.PromptTokens > 0: // OpenAI: the prompt count includes cached tokens
		return providers.Usage{InputUncached: u.PromptTokens - u.PromptTokensDetails.CachedTokens, CacheRead: u.PromptTokensDetails.CachedTokens, Output: u.CompletionTokens}
	case u.BInput+u.BOutput > 0: // Bedrock: input excludes cache reads and writes
		return providers.Usage{InputUncached: u.BInput, CacheRead: u.BCacheRead, CacheWrite5m: u.BCacheWrite, Output: u.BOutput}
	default: // Anthropic: input excludes cache reads and writes
		r := providers.Usage{InputUncached: u.InputTokens, CacheRead: u.CacheRead, Output: u.OutputTokens}
		if c := u.CacheCreation; c != nil {
			r.CacheWrite5m, r.CacheWrite1h = c.W5m, c.W1h
		} else {
			r.CacheWrite5m = u.CacheCreationTotal
		}
		return r
	}
}

// parts is a cost split by what was paid for: uncached input, cache reads, cache writes
// (5m and 1h), output. It shows where the money of a row sits.
type parts [4]ledger.Micros

const (
	partInput = iota
	partRead
	partWrite
	partOutput
)

var partNames = [...]string{"uncached input", "cache reads", "cache writes", "output"}

func (p *parts) add(q parts) {
	for i := range p {
		p[i] += q[i]
	}
}

// cost prices the recorded calls at the model's catalog price, and splits the price by part.
func cost(xs []exchange, price catalog.Price) (total ledger.Micros, split parts, calls, invalid int) {
	var precise [4]int64 // 1e-12 dollars, rounded once per row
	for _, x := range xs {
		if x.status >= 400 {
			invalid++
			continue
		}
		calls++
		u := usageOf(x.answer)
		total += ledger.Micros(price.Cost(u))
		t := tierOf(price, u)
		precise[partInput] += t.CostPrecise(providers.Usage{InputUncached: u.InputUncached})
		precise[partRead] += t.CostPrecise(providers.Usage{CacheRead: u.CacheRead})
		precise[partWrite] += t.CostPrecise(providers.Usage{CacheWrite5m: u.CacheWrite5m, CacheWrite1h: u.CacheWrite1h})
		precise[partOutput] += t.CostPrecise(providers.Usage{Output: u.Output})
	}
	for i, v := range precise {
		split[i] = ledger.Micros((v + 500_000) / 1_000_000)
	}
	return total, split, calls, invalid
}

// tierOf is the price a call with usage u is billed at: the long-context rates when its
// prompt is over the tier's threshold (the tier applies to the whole call, every part).
func tierOf(p catalog.Price, u providers.Usage) catalog.Price {
	if p.LongAbove > 0 && u.PromptTokens() > p.LongAbove {
		p.Input, p.CachedInput, p.CacheWrite5m, p.CacheWrite1h, p.Output = p.LongInput, p.LongCachedInput, p.LongCacheWrite5m, p.LongCacheWrite1h, p.LongOutput
	}
	p.LongAbove = 0
	return p
}
