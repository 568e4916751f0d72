package handlers

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/tokenopt/tokens"
)

// Two calibrations, both learned per model from the prompt tokens each upstream reports, and
// both process-wide so config reloads keep what was learned:
//
//   - promptCalibration relates the reported count to the hot path's estimate (four bytes of
//     the chat body as sent, a rate that costs nothing to compute). It corrects the gateway's
//     estimates where they touch money: the input billed for a stream cut before its usage
//     arrived, and the input bound of a credit reservation. Because it touches money it is
//     learned per workspace: one tenant's traffic (a prompt written to tokenize densely or
//     loosely) must not move another tenant's reservations or bills.
//   - countCalibration relates it to a tiktoken count of the same body. Claude's and Gemini's
//     tokenizers are not public; tiktoken times the learned ratio is the gateway's best count
//     for them (and for OpenAI models the ratio stays near 1). tiktoken costs far too much to
//     run on every request (a 256 KiB body costs tens of milliseconds), so it is sampled off
//     the request path: at most one count per model per countSampleEvery, of bodies up to
//     countSampleMaxBytes, a few milliseconds of one core per model every ten seconds. And
//     only once something has asked for a count: loading tiktoken's encodings costs half a
//     second of CPU and tens of MB, which a gateway that never counts should not pay.
//
// A third, outputCalibration, relates the output tokens an upstream reports for a completed
// stream to four bytes a token of the text the gateway relayed (ChunkTextBytes): it turns
// the text a cut stream delivered into the tokens it is billed for. It touches money too, so
// it is learned per workspace like promptCalibration.
var (
	outputCalibration = tokens.NewCalibrator(0, 0, 0)
	promptCalibration = tokens.NewCalibrator(0, 0, 0)
	countCalibration  = tokens.NewCalibrator(0, 0, 0)
	countsWanted      atomic.Bool // set by the first token count asked for
)

const (
	countSampleEvery    = 10 * time.Second
	countSampleMaxBytes = 32 << 10
)

// estimatedPrompt is the prompt estimate of a body of size bytes before calibration.
func estimatedPrompt(size int) int64 { return int64(tokens.Estimate(size)) }

// calibratedPrompt is the prompt estimate for a body of size bytes on model, corrected by what
// was learned from workspace's own traffic.
func calibratedPrompt(workspace, model string, size int) int64 {
	return int64(promptCalibration.Adjust(promptKey(workspace, model), int(estimatedPrompt(size))))
}

func promptKey(workspace, model string) string { return workspace + "\x00" + model }

// observePrompt feeds one answered request into both calibrations: only usage the upstream
// reported for this very body (not a cached replay or the gateway's own estimate).
func observePrompt(ex *Exchange, prices *catalog.Catalog) {
	if !ex.UsageKnown || ex.UsageEstimated || ex.Partial || ex.UpstreamModel == "" || ex.Provider == "cache" {
		return
	}
	size, actual := ex.OutboundLen(), int(ex.Usage.PromptTokens())
	promptCalibration.Observe(promptKey(ex.WorkspaceID, ex.UpstreamModel), int(estimatedPrompt(size)), actual)
	if !countsWanted.Load() || size > countSampleMaxBytes {
		return
	}
	model := canonicalModel(prices, ex.UpstreamModel)
	if !countSampler.take(model, time.Now()) {
		return
	}
	body := append([]byte(nil), ex.OutboundBody()...) // the exchange's buffers are not ours after return
	go countCalibration.Observe(model, tokens.CountChat(model, body), actual)
}

// calibratedOutput is the output tokens of textBytes of delivered text on model: four bytes a
// token, corrected by what the workspace's completed streams of the model taught.
func calibratedOutput(workspace, model string, textBytes int64) int64 {
	return int64(outputCalibration.Adjust(promptKey(workspace, model), tokens.Estimate(int(min(textBytes, 1<<40)))))
}

// observeOutput learns the output ratio from a stream that completed with the upstream's
// usage: the text relayed against the output tokens reported. Only when no hidden reasoning
// is reported apart: reasoning an upstream does not stream is output with no text relayed.
func observeOutput(ex *Exchange) {
	if !ex.Streamed || !ex.UsageKnown || ex.UsageEstimated || ex.Partial || ex.Coalesced || ex.Provider == "cache" ||
		ex.UpstreamModel == "" || ex.Usage.Reasoning != 0 || ex.DeliveredTextBytes <= 0 {
		return
	}
	outputCalibration.Observe(promptKey(ex.WorkspaceID, ex.UpstreamModel), tokens.Estimate(int(ex.DeliveredTextBytes)), int(ex.Usage.Output))
}

// countedTokens is tiktoken's count of text in model's encoding, corrected by the ratio
// learned for model. It stops with ctx's error when ctx is done.
func countedTokens(ctx context.Context, prices *catalog.Catalog, model, text string) (int, error) {
	countsWanted.Store(true)
	n, err := tokens.CountContext(ctx, model, text)
	return countCalibration.Adjust(canonicalModel(prices, model), n), err
}

// canonicalModel keys calibration by model, whatever host serves it: a tokenizer belongs to
// the model, and Bedrock's and Anthropic's spellings of Claude share one.
func canonicalModel(prices *catalog.Catalog, model string) string {
	if prices != nil {
		if p, ok := prices.Lookup(model); ok && p.Model != "" {
			return p.Model
		}
	}
	return model
}

// sampler lets one event per key through per countSampleEvery.
type sampler struct {
	mu   sync.Mutex
	last map[string]time.Time
}

var countSampler = &sampler{last: map[string]time.Time{}}

func (s *sampler) take(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.last[key]) < countSampleEvery {
		return false
	}
	if len(s.last) >= 4096 { // bounded: forget everything rather than grow
		clear(s.last)
	}
	s.last[key] = now
	return true
}
