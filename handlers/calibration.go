package handlers

import (
	"github.com/badtheorylabs/btl-runtime/tokenopt/tokens"
)

// promptCalibration learns, per upstream model, how many prompt tokens the provider bills per
// estimated token (four bytes of the chat body as the gateway sends it). Tokenizers differ —
// Claude's and Gemini's are not public — and so do the providers' prompt framings, so the
// ratio is learned from each answer's reported usage. It corrects the gateway's own estimates
// where they touch money: the input billed for a stream cut before its usage arrived, and the
// input bound of a credit reservation. Process-wide, so config reloads keep what was learned.
var promptCalibration = tokens.NewCalibrator(0, 0, 0)

// estimatedPrompt is the body's prompt estimate before calibration.
func estimatedPrompt(body []byte) int64 { return int64(tokens.Estimate(len(body))) }

// observePrompt feeds one answered request into the calibration: only usage the upstream
// reported for this very body (not a cached replay or the gateway's own estimate).
func observePrompt(ex *Exchange) {
	if !ex.UsageKnown || ex.UsageEstimated || ex.Partial || ex.UpstreamModel == "" || ex.Provider == "cache" {
		return
	}
	promptCalibration.Observe(ex.UpstreamModel, int(estimatedPrompt(ex.OutboundBody())), int(ex.Usage.PromptTokens()))
}

// calibratedPrompt is the prompt estimate for body on model, corrected by what was learned.
func calibratedPrompt(model string, body []byte) int64 {
	return int64(promptCalibration.Adjust(model, int(estimatedPrompt(body))))
}
