package providers

import "encoding/json"

// Bounds are the billable limits of a request as it goes upstream, after every rewrite (the
// optimizer's output budget, an adapter's thinking budget or default cap). The adapter that
// built the request reports them through Call.Admit before it sends anything, so the meter
// reserves for exactly what is sent.
type Bounds struct {
	// MaxTokens is the output cap per choice sent upstream; 0 when none was sent, so the
	// upstream's default (at most the model's maximum output) applies.
	MaxTokens int64
	// Choices is how many answers were asked for (n), at least 1.
	Choices int64
	// ServiceTier is the processing tier forwarded upstream, "" when none was.
	ServiceTier string
}

// Admit reports b through admit, which may refuse the call (nil admits everything). Adapters
// call it once they have built the upstream request and before they send it.
func Admit(admit func(Bounds) error, b Bounds) error {
	if admit == nil {
		return nil
	}
	b.Choices = max(b.Choices, 1)
	return admit(b)
}

// ChatBounds reads the bounds of an OpenAI chat body as it is sent: max_completion_tokens
// (else max_tokens), n and service_tier, in one pass over its top-level members. As with
// encoding/json the last of a repeated key wins; a value that is not a plain integer or
// string is left out (the request view has already refused such bodies).
func ChatBounds(body []byte) Bounds {
	var b Bounds
	var maxTokens, maxCompletion int64
	_ = EachTopLevel(body, func(quoted []byte, v Span) bool {
		raw := body[v.Start:v.End]
		switch {
		case KeyEquals(quoted, "max_completion_tokens"):
			maxCompletion = plainInt(raw)
		case KeyEquals(quoted, "max_tokens"):
			maxTokens = plainInt(raw)
		case KeyEquals(quoted, "n"):
			b.Choices = plainInt(raw)
		case KeyEquals(quoted, "service_tier"):
			b.ServiceTier = plainString(raw)
		}
		return true
	})
	b.MaxTokens = maxTokens
	if maxCompletion > 0 {
		b.MaxTokens = maxCompletion
	}
	b.Choices = max(b.Choices, 1)
	return b
}

// ResponsesBounds reads the bounds of an OpenAI Responses body as it is sent:
// max_output_tokens and service_tier (one answer per call).
func ResponsesBounds(body []byte) Bounds {
	b := Bounds{Choices: 1}
	_ = EachTopLevel(body, func(quoted []byte, v Span) bool {
		raw := body[v.Start:v.End]
		switch {
		case KeyEquals(quoted, "max_output_tokens"):
			b.MaxTokens = plainInt(raw)
		case KeyEquals(quoted, "service_tier"):
			b.ServiceTier = plainString(raw)
		}
		return true
	})
	return b
}

// plainInt reads a non-negative JSON integer, saturating at 2^62; anything else is 0.
func plainInt(raw []byte) int64 {
	if len(raw) == 0 {
		return 0
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0
		}
		if n < 1<<62/10 {
			n = n*10 + int64(c-'0')
		} else {
			n = 1 << 62
		}
	}
	return n
}

// plainString reads a JSON string without escapes; anything else is "".
func plainString(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			_ = json.Unmarshal(raw, &s)
			return s
		}
	}
	return string(inner)
}
