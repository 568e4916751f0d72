package coalesce

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/tokenopt/internal/msgjson"
)

// Deterministic reports whether a chat-completions body asks for one deterministic answer: the
// only kind that identical requests may share by default. Anything else is an independent draw
// that the caller asked for (parallel sampling, best-of-n, self-consistency), and handing every
// caller the same sample would silently break it.
//
// Deterministic means:
//   - temperature present and 0 (OpenAI's and Anthropic's default is 1: absent or null is a
//     sample);
//   - n absent, null or 1;
//   - no sampling-only parameter that asks for a draw: top_p other than 1 (its no-op value),
//     top_k, min_p, typical_p, top_a or best_of (any non-null value). With temperature 0
//     they change nothing upstream, but a caller who sets them meant to sample.
//
// The body must be valid JSON (it passed providers.ParseChatRequest); a key that cannot be
// read counts as sampled, so an answer is never shared by mistake.
func Deterministic(body []byte) bool {
	var d verdict
	err := providers.EachTopLevel(body, func(quoted []byte, v providers.Span) bool {
		return d.member(quoted, body[v.Start:v.End])
	})
	return err == nil && d.deterministic()
}

// DeterministicMembers is Deterministic on a body's top-level members found already, in
// order and duplicates included (conv.View.Top): a large body is not walked again.
func DeterministicMembers(body []byte, top []msgjson.Member) bool {
	var d verdict
	for _, m := range top {
		if !d.member(m.Key, body[m.Val.Start:m.Val.End]) {
			break
		}
	}
	return d.deterministic()
}

// verdict is Deterministic's judgement, member by member.
type verdict struct{ zeroTemperature, sampled bool }

// member takes one top-level member (the key as written, the raw value) and reports whether
// the walk should go on.
func (d *verdict) member(quoted, raw []byte) bool {
	key, ok := keyText(quoted)
	if !ok {
		d.sampled = true
		return false
	}
	null := string(raw) == "null"
	det := true
	switch string(key) {
	case "temperature":
		d.zeroTemperature = !null && numberIs(raw, 0)
		return true
	case "n":
		det = null || numberIs(raw, 1)
	case "top_p":
		det = null || numberIs(raw, 1)
	case "top_k", "min_p", "typical_p", "top_a", "best_of":
		det = null
	default:
		return true
	}
	// As in encoding/json, a repeated key counts by its last value; a sampled verdict on
	// any key other than temperature is final.
	d.sampled = !det
	return det
}

func (d *verdict) deterministic() bool { return !d.sampled && d.zeroTemperature }

// numberIs reports whether raw is a JSON number equal to want (0, 0.0, -0, 0e5 are all 0).
func numberIs(raw []byte, want float64) bool {
	f, err := strconv.ParseFloat(string(raw), 64)
	return err == nil && f == want
}

// keyText returns a quoted JSON key's text, decoding escapes only when there are any (a
// caller could write "temperat\u0075re").
func keyText(quoted []byte) ([]byte, bool) {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return quoted[1 : len(quoted)-1], true
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}
