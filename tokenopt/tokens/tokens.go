// Package tokens counts tokens offline with tiktoken-go and the embedded BPE loader (never a
// download at run time), maps models to encodings itself (tiktoken-go does not know gpt-5*,
// o3, o4*) and calibrates estimates for non-OpenAI tokenizers from observed usage.
package tokens

import (
	"context"
	"strings"
	"sync"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Encoding names.
const (
	O200k  = "o200k_base"
	CL100k = "cl100k_base"
)

// Chat-format overhead (OpenAI cookbook, gpt-3.5-turbo-0613+ / gpt-4* / gpt-4o): 3 tokens per
// message, 1 more for a name, 3 priming the reply.
const (
	PerMessage  = 3
	PerName     = 1
	ReplyPrimer = 3
	// ImageLow and ImageHigh are the fixed image estimates: a low-detail image, and a
	// high/auto-detail 1024×1024 one (85 + 4 tiles × 170).
	ImageLow  = 85
	ImageHigh = 765
)

// EncodingFor maps a model id (any host's spelling) to its tiktoken encoding: o200k_base for
// gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1/o3/o4* and, as the approximation, every other model;
// cl100k_base for gpt-4 and gpt-3.5.
func EncodingFor(model string) string {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	m = strings.TrimPrefix(m, "openai.")
	switch {
	case strings.HasPrefix(m, "gpt-4o"), strings.HasPrefix(m, "gpt-4.1"), strings.HasPrefix(m, "gpt-4.5"),
		strings.HasPrefix(m, "chatgpt-4o"):
		return O200k
	case strings.HasPrefix(m, "gpt-4"), strings.HasPrefix(m, "gpt-3.5"), strings.HasPrefix(m, "gpt-35"),
		strings.HasPrefix(m, "text-embedding-3"), strings.HasPrefix(m, "text-embedding-ada-002"):
		return CL100k
	}
	return O200k
}

var (
	loaderOnce sync.Once
	encMu      sync.Mutex
	encs       = map[string]*encEntry{}
)

type encEntry struct {
	once sync.Once
	tk   *tiktoken.Tiktoken
	err  error
}

// installLoader sets the offline loader before any encoding is built. Encodings are only
// built through get, so no code path of this package can reach the downloading loader.
func installLoader() {
	loaderOnce.Do(func() { tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader()) })
}

func get(name string) (*tiktoken.Tiktoken, error) {
	installLoader()
	encMu.Lock()
	e := encs[name]
	if e == nil {
		e = &encEntry{}
		encs[name] = e
	}
	encMu.Unlock()
	e.once.Do(func() { e.tk, e.err = tiktoken.GetEncoding(name) })
	return e.tk, e.err
}

// Count returns the number of tokens of text in model's encoding. Special-token strings in
// text are counted as ordinary text. The work is bounded (see CountContext): beyond
// ExactLimit bytes, and inside runs longer than MaxRun bytes without whitespace, the count is
// a close estimate. If the encoding cannot be loaded (it is embedded, so this does not happen
// in practice) it falls back to Estimate.
func Count(model string, text string) int {
	n, _ := CountContext(context.Background(), model, text)
	return n
}

// Estimate is the cheap byte-based estimate (about 4 bytes a token, rounded up) used where a
// real count would cost too much (hot paths over whole requests).
func Estimate(bytes int) int { return (bytes + 3) / 4 }

// CountChat estimates the prompt tokens of an OpenAI chat-completions body: content text, names,
// tool-call names and arguments, a fixed estimate per image, the per-message overhead and the
// reply priming. Tool definitions are counted as their JSON text (OpenAI's hidden rendering is
// unpublished). A body that is not a valid chat request counts as Estimate(len(body)).
func CountChat(model string, body []byte) int {
	s, ok, err := providers.FindTopLevel(body, "messages")
	if err != nil || !ok || body[s.Start] != '[' {
		return Estimate(len(body))
	}
	var sb strings.Builder
	n := ReplyPrimer
	bad := providers.EachElement(body[s.Start:s.End], func(_ int, msg []byte) bool {
		if len(msg) == 0 || msg[0] != '{' {
			return false
		}
		n += PerMessage
		if v, ok := str(msg, "name"); ok && v != "" {
			n += PerName
			sb.WriteString(v)
		}
		if v, ok := str(msg, "role"); ok {
			sb.WriteString(v)
			sb.WriteByte('\n')
		}
		if cs, ok, _ := providers.FindTopLevel(msg, "content"); ok {
			c := msg[cs.Start:cs.End]
			switch c[0] {
			case '"':
				if v, ok := decodeString(c); ok {
					sb.WriteString(v)
				}
			case '[':
				_ = providers.EachElement(c, func(_ int, part []byte) bool {
					if len(part) == 0 || part[0] != '{' {
						return true
					}
					if v, ok := str(part, "text"); ok {
						sb.WriteString(v)
						return true
					}
					if is, ok, _ := providers.FindTopLevel(part, "image_url"); ok {
						n += imageTokens(part[is.Start:is.End])
					}
					return true
				})
			}
		}
		if ts, ok, _ := providers.FindTopLevel(msg, "tool_calls"); ok && msg[ts.Start] == '[' {
			// Names and argument strings dominate; count the raw JSON of the calls.
			sb.Write(msg[ts.Start:ts.End])
		}
		sb.WriteByte('\n')
		return true
	})
	if bad != nil {
		return Estimate(len(body))
	}
	if ts, ok, _ := providers.FindTopLevel(body, "tools"); ok && body[ts.Start] == '[' {
		sb.Write(body[ts.Start:ts.End])
	}
	return n + Count(model, sb.String())
}

func imageTokens(v []byte) int {
	if len(v) > 0 && v[0] == '{' {
		if d, ok := str(v, "detail"); ok && d == "low" {
			return ImageLow
		}
	}
	return ImageHigh
}

// str returns the decoded string value of key in the object obj.
func str(obj []byte, key string) (string, bool) {
	s, ok, err := providers.FindTopLevel(obj, key)
	if err != nil || !ok || obj[s.Start] != '"' {
		return "", false
	}
	return decodeString(obj[s.Start:s.End])
}
