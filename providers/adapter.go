package providers

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Adapter speaks one upstream's wire format. It receives the caller's OpenAI-shaped request and
// answers in OpenAI shape: a chat.completion body, or a stream of chat.completion.chunk payloads.
// Translation happens entirely inside the adapter so routing, metering and the optimizer see one
// format. Errors returned are *Error with a Class, so the router can decide on retry/failover.
type Adapter interface {
	// Name is the configured provider name (the part before "/" in a pinned model).
	Name() string
	// Type is the wire format, e.g. "openai", "anthropic".
	Type() string
	// Chat performs one upstream attempt.
	Chat(ctx context.Context, call *Call) (*Response, error)
}

// Call is one upstream attempt.
type Call struct {
	Request *ChatRequest
	// Body is what to send, in OpenAI shape; the optimizer may have rewritten it. Adapters
	// replace "model" with UpstreamModel themselves.
	Body          []byte
	UpstreamModel string
	// Stream asks for a streamed answer; adapters always ask the upstream for usage then.
	Stream bool
	// Affinity identifies the conversation (0: none), so adapters with a key pool keep it on
	// one key while that key is available.
	Affinity uint64
	// Admit, when set, is told the Bounds of the upstream request the adapter built (its
	// output cap after any default or thinking budget the adapter added, n, service tier)
	// before anything is sent; an error refuses the call and is returned as Chat's error.
	// Every adapter calls it through providers.Admit.
	Admit func(Bounds) error
}

// Response is an upstream answer in OpenAI shape.
type Response struct {
	Status int
	// Header holds upstream headers worth passing to the client (request id, rate limits).
	Header http.Header
	// Body is the chat.completion JSON of a non-stream answer.
	Body []byte
	// Usage is set by adapters that know more than the OpenAI usage object can say (cache
	// write TTLs); when nil the caller reads usage from Body or the stream's usage chunk.
	Usage *Usage
	// Stream is non-nil for streamed answers.
	Stream ChunkStream
	// UpstreamRequestID is the provider's own id for the call.
	UpstreamRequestID string
}

// ChunkStream yields the data payloads of OpenAI chat.completion.chunk events. A payload is
// valid until the next call to Next. Next returns io.EOF after the last chunk ([DONE]). An
// in-stream upstream error is returned as an *Error after any chunks before it.
type ChunkStream interface {
	Next() ([]byte, error)
	Close() error
}

// Pender is implemented by streams that can tell whether the next chunk is already in memory;
// the relay then writes it in the same flush instead of one network write per event.
type Pender interface {
	Pending() bool
}

// UsageReporter is implemented by streams whose adapter knows the call's usage in more detail
// than the OpenAI usage chunk carries (Anthropic's 5-minute and 1-hour cache writes).
type UsageReporter interface {
	Usage() Usage
}

// Timeouts bounds an upstream call. Zero values take the defaults in Defaults.
type Timeouts struct {
	Connect   time.Duration `json:"connect,omitempty"`
	FirstByte time.Duration `json:"first_byte,omitempty"`
	// Idle is the longest silence tolerated between two stream events.
	Idle time.Duration `json:"idle,omitempty"`
}

// WithDefaults fills zero fields.
func (t Timeouts) WithDefaults() Timeouts {
	if t.Connect <= 0 {
		t.Connect = 10 * time.Second
	}
	if t.FirstByte <= 0 {
		t.FirstByte = 120 * time.Second
	}
	if t.Idle <= 0 {
		t.Idle = 120 * time.Second
	}
	return t
}

// Config describes one configured provider. Options carries type-specific settings (region,
// project, credentials_file …). Secrets arrive already expanded and must never be logged.
type Config struct {
	Name    string
	Type    string
	BaseURL string
	APIKey  string
	// APIKeys are further keys for the same provider, used as a pool with APIKey; KeyWeights
	// (parallel to APIKey followed by APIKeys) spread traffic between them.
	APIKeys    []string
	KeyWeights []int
	Options    map[string]string
	Timeouts   Timeouts
	// Models lists upstream models this provider is known to serve (for /v1/models).
	Models []string
}

// Factory builds an adapter from its config and a shared HTTP client.
type Factory func(cfg Config, client *http.Client) (Adapter, error)

type registration struct {
	factory Factory
	options map[string]bool
}

var (
	factoriesMu sync.RWMutex
	factories   = map[string]registration{}
)

// Register makes a wire format available by type name; adapter packages call it from init.
// optionKeys are the type-specific settings its Config.Options may carry; the config parser
// rejects any other key so a typo is an error, not a silently ignored setting.
func Register(typ string, f Factory, optionKeys ...string) {
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	if _, dup := factories[typ]; dup {
		panic("providers: duplicate adapter type " + typ)
	}
	opts := make(map[string]bool, len(optionKeys))
	for _, k := range optionKeys {
		opts[k] = true
	}
	factories[typ] = registration{factory: f, options: opts}
}

// KnownType reports whether typ is registered.
func KnownType(typ string) bool {
	factoriesMu.RLock()
	defer factoriesMu.RUnlock()
	_, ok := factories[typ]
	return ok
}

// KnownOption reports whether typ accepts the type-specific option key.
func KnownOption(typ, key string) bool {
	factoriesMu.RLock()
	defer factoriesMu.RUnlock()
	return factories[typ].options[key]
}

// Types lists the registered wire formats.
func Types() []string {
	factoriesMu.RLock()
	defer factoriesMu.RUnlock()
	out := make([]string, 0, len(factories))
	for t := range factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// New builds an adapter of cfg.Type.
func New(cfg Config, client *http.Client) (Adapter, error) {
	factoriesMu.RLock()
	reg, ok := factories[cfg.Type]
	factoriesMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("provider %q: unknown type %q (known: %v)", cfg.Name, cfg.Type, Types())
	}
	for k := range cfg.Options {
		if !reg.options[k] {
			return nil, fmt.Errorf("provider %q: type %s has no option %q", cfg.Name, cfg.Type, k)
		}
	}
	return reg.factory(cfg, client)
}
