package simulated

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Options configures a simulated upstream. Zero values take the documented defaults.
type Options struct {
	// Latency is added before the response headers of every chat completion.
	Latency time.Duration
	// ChunkDelay is the pause between two stream chunks.
	ChunkDelay time.Duration
	// ChunksPerAnswer is how many content chunks a streamed answer is split into (default 8).
	ChunksPerAnswer int
	// CacheTTL is how long a prefix cache entry lives after its last use (default 10m).
	CacheTTL time.Duration
	// CacheMaxEntries bounds the prefix cache (default 262144 boundary entries).
	CacheMaxEntries int
	// RequireKey answers 401 to requests without a bearer token.
	RequireKey bool
	// Seed varies answers, ids and the random fault sequence.
	Seed int64
	// Now is the clock (default time.Now); it drives "created", credential lifetimes and,
	// unless CacheClock is set, cache expiry.
	Now func() time.Time
	// CacheClock, when set, drives what depends on traffic over time — prompt-cache expiry
	// and the OpenAI overflow rates — so a benchmark can run its traffic on virtual time
	// while signatures and tokens stay on the wall clock.
	CacheClock func() time.Time
	// MaxBodyBytes bounds request bodies (default 32 MiB); larger ones get 413.
	MaxBodyBytes int64
	// OpenAICache is the OpenAI side's cache model (default CacheByKey); Machines and
	// MachineRPM tune the overflow models (defaults 64 and 15).
	OpenAICache OpenAICache
	Machines    int
	MachineRPM  int
	// Sampling models a real model's sampling on chat completions: a request that asks for a
	// sample (temperature absent, null or above 0; OpenAI's default is 1) gets a fresh answer
	// and id on every call. Requests with temperature 0 keep their one deterministic answer.
	// Off by default, so the same request always yields the same answer.
	Sampling bool
}

func (o Options) withDefaults() Options {
	if o.ChunksPerAnswer <= 0 {
		o.ChunksPerAnswer = 8
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 10 * time.Minute
	}
	if o.CacheMaxEntries <= 0 {
		o.CacheMaxEntries = 1 << 18
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 32 << 20
	}
	if o.OpenAICache == "" {
		o.OpenAICache = CacheByKey
	}
	if o.Machines <= 0 {
		o.Machines = DefaultMachines
	}
	if o.MachineRPM <= 0 {
		o.MachineRPM = DefaultMachineRPM
	}
	return o
}

// Server is a simulated OpenAI-compatible upstream. It is safe for concurrent use.
type Server struct {
	opts   Options
	seq    atomic.Uint64
	draws  atomic.Uint64 // Options.Sampling's draw counter
	cache  *prefixCache
	stats  statsCounters
	faults faultState
	holds  holdSet
	// toolArgs memoizes generated tool arguments by schema hash.
	toolArgs sync.Map
	toolArgN atomic.Int64
	// anth is the Anthropic Messages side (anthropic.go).
	anth anthropicState
	// bedrock and google are the Bedrock and Gemini/Vertex sides (bedrock.go, gemini.go).
	bedrock bedrockState
	google  googleState
	// routes scopes the OpenAI side's prefix cache (openai_cache.go).
	routes cacheRoutes
}

// New returns a simulated upstream.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	s := &Server{opts: opts}
	s.cache = newPrefixCache(opts.CacheMaxEntries)
	s.routes = cacheRoutes{mode: opts.OpenAICache, machines: opts.Machines, rpm: opts.MachineRPM}
	s.faults.init(opts.Seed)
	s.stats.keys = map[string]*KeyStats{}
	s.holds.m = map[string]*hold{}
	return s
}

// ServeHTTP routes chat completions, models and the /_sim control endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch p {
	case "/v1/chat/completions", "/chat/completions":
		if r.Method != http.MethodPost {
			s.notAllowed(w, r)
			return
		}
		s.chat(w, r)
		return
	case "/v1/embeddings", "/embeddings", "/v1/completions", "/completions", "/v1/moderations", "/moderations":
		if r.Method != http.MethodPost {
			s.notAllowed(w, r)
			return
		}
		switch strings.TrimPrefix(p, "/v1") {
		case "/embeddings":
			s.openAIEmbeddings(w, r)
		case "/completions":
			s.legacyCompletion(w, r)
		default:
			s.moderation(w, r)
		}
		return
	case "/v1/models", "/models":
		if r.Method != http.MethodGet {
			s.notAllowed(w, r)
			return
		}
		s.models(w, r, "")
		return
	case "/_sim/faults":
		s.controlFaults(w, r)
		return
	case "/_sim/stats":
		writeJSON(w, http.StatusOK, s.Stats())
		return
	case "/_sim/release":
		if r.Method != http.MethodPost {
			s.notAllowed(w, r)
			return
		}
		s.Release(r.URL.Query().Get("name"))
		writeJSON(w, http.StatusOK, map[string]bool{"released": true})
		return
	case "/_sim/reset":
		if r.Method != http.MethodPost {
			s.notAllowed(w, r)
			return
		}
		s.Reset()
		writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
		return
	case "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	if s.serveAnthropic(w, r) {
		return
	}
	if s.serveBedrock(w, r) || s.serveGemini(w, r) {
		return
	}
	for _, pre := range [...]string{"/v1/models/", "/models/"} {
		if id, ok := strings.CutPrefix(p, pre); ok && id != "" && r.Method == http.MethodGet {
			s.models(w, r, id)
			return
		}
	}
	s.setCommonHeaders(w.Header(), 0)
	e := &providers.Error{Status: http.StatusNotFound, Type: "invalid_request_error",
		Message: "Invalid URL (" + r.Method + " " + p + ")"}
	providers.WriteError(w, e)
}

func (s *Server) notAllowed(w http.ResponseWriter, r *http.Request) {
	s.setCommonHeaders(w.Header(), 0)
	providers.WriteError(w, &providers.Error{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
		Message: "Invalid method for URL (" + r.Method + " " + r.URL.Path + ")"})
}

// Reset clears the prefix cache, the statistics and the faults.
func (s *Server) Reset() {
	s.cache.reset()
	s.routes.mu.Lock()
	clear(s.routes.m)
	clear(s.routes.keys)
	s.routes.mu.Unlock()
	s.stats.reset()
	s.SetFaults(Faults{})
	s.anth.reset()
	s.bedrock.reset()
	s.google.reset()
}

// Rate-limit header values: generous, constant limits like a high OpenAI tier.
const (
	rlRequests = 30000
	rlTokens   = 150000000
)

var (
	hvLimitRequests   = []string{strconv.Itoa(rlRequests)}
	hvLimitTokens     = []string{strconv.Itoa(rlTokens)}
	hvRemainingReq    = []string{strconv.Itoa(rlRequests - 1)}
	hvRemainingTokens = []string{strconv.Itoa(rlTokens)}
	hvResetRequests   = []string{"2ms"}
	hvResetTokens     = []string{"0s"}
	hvZero            = []string{"0"}
	hvJSON            = []string{"application/json"}
	hvSSE             = []string{"text/event-stream; charset=utf-8"}
	hvNoCache         = []string{"no-cache"}
	hvOpenAIVersion   = []string{"2020-10-01"}
)

// setCommonHeaders adds the request id and OpenAI-style rate limit headers. promptTokens
// lowers the remaining token budget when known.
func (s *Server) setCommonHeaders(h http.Header, promptTokens int) {
	if h["X-Request-Id"] == nil {
		var b [32]byte
		id := strconv.AppendUint(append(b[:0], "req_sim_"...), s.seq.Add(1), 10)
		h["X-Request-Id"] = []string{string(id)}
	}
	h["X-Ratelimit-Limit-Requests"] = hvLimitRequests
	h["X-Ratelimit-Limit-Tokens"] = hvLimitTokens
	h["X-Ratelimit-Remaining-Requests"] = hvRemainingReq
	if promptTokens > 0 {
		h["X-Ratelimit-Remaining-Tokens"] = []string{strconv.Itoa(max(rlTokens-promptTokens, 0))}
	} else {
		h["X-Ratelimit-Remaining-Tokens"] = hvRemainingTokens
	}
	h["X-Ratelimit-Reset-Requests"] = hvResetRequests
	h["X-Ratelimit-Reset-Tokens"] = hvResetTokens
	h["Openai-Version"] = hvOpenAIVersion
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) string {
	v := r.Header.Get("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

func (s *Server) checkKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	key := bearer(r)
	if key == "" && s.opts.RequireKey {
		providers.WriteError(w, &providers.Error{Status: http.StatusUnauthorized, Type: "invalid_request_error",
			Message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."})
		return "", false
	}
	return key, true
}

// Models served by GET /v1/models. Chat completions accept any model name.
var simModels = []string{"sim-fast", "sim-smart", "sim-reasoning", "gpt-4o-mini", "gpt-5-mini"}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) models(w http.ResponseWriter, r *http.Request, id string) {
	s.setCommonHeaders(w.Header(), 0)
	if _, ok := s.checkKey(w, r); !ok {
		return
	}
	const created = 1735689600 // 2025-01-01
	if id != "" {
		writeJSON(w, http.StatusOK, modelObject{ID: id, Object: "model", Created: created, OwnedBy: "btl-sim"})
		return
	}
	list := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list"}
	for _, m := range simModels {
		list.Data = append(list.Data, modelObject{ID: m, Object: "model", Created: created, OwnedBy: "btl-sim"})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) controlFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.currentFaults())
	case http.MethodPost, http.MethodPut:
		var f Faults
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = json.Unmarshal(body, &f)
		}
		if err == nil {
			err = f.validate()
		}
		if err != nil {
			providers.WriteError(w, providers.Errorf(http.StatusBadRequest, "invalid_value", "", "invalid faults: %v", err))
			return
		}
		s.SetFaults(f)
		writeJSON(w, http.StatusOK, f)
	default:
		s.notAllowed(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header()["Content-Type"] = hvJSON
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBody reads at most limit bytes into a pooled buffer.
func readBody(r *http.Request, limit int64) (*bytes.Buffer, error) {
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	if r.ContentLength > limit {
		bodyPool.Put(buf)
		return nil, errTooLarge
	}
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		bodyPool.Put(buf)
		return nil, err
	}
	if n > limit {
		bodyPool.Put(buf)
		return nil, errTooLarge
	}
	return buf, nil
}

func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= 1<<20 {
		bodyPool.Put(buf)
	}
}

var errTooLarge = errors.New("request body too large")

// sleepCtx waits d or until ctx is done; it reports whether the full delay elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ListenAndServe serves a simulated upstream on addr until ctx is done, then shuts down
// gracefully (open streams get five seconds to finish).
func ListenAndServe(ctx context.Context, addr string, opts Options) error {
	ln, err := (&net.ListenConfig{KeepAlive: 30 * time.Second}).Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           New(opts),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		// No WriteTimeout: streams and holds may legitimately run long.
		IdleTimeout:    5 * time.Minute,
		MaxHeaderBytes: 1 << 20,
		BaseContext:    func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

// cacheNow is the time prompt caches and traffic rates go by.
func (s *Server) cacheNow() time.Time {
	if s.opts.CacheClock != nil {
		return s.opts.CacheClock()
	}
	return s.opts.Now()
}
