package simulated

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Faults are random failure rates applied to chat completions. Rates are probabilities in
// [0,1]; their sum must not exceed 1. One draw per request picks at most one fault.
type Faults struct {
	// ErrorRate answers with ErrorStatus (default 500).
	ErrorRate   float64 `json:"error_rate"`
	ErrorStatus int     `json:"error_status"`
	// RateLimitRate answers 429 rate_limit_exceeded with Retry-After: RetryAfter.
	RateLimitRate float64       `json:"rate_limit_rate"`
	RetryAfter    time.Duration `json:"-"`
	// CutRate aborts the connection: a stream after a random number of content chunks, a
	// non-stream answer midway through its body.
	CutRate float64 `json:"cut_rate"`
}

type faultsJSON struct {
	ErrorRate     float64         `json:"error_rate"`
	ErrorStatus   int             `json:"error_status,omitempty"`
	RateLimitRate float64         `json:"rate_limit_rate"`
	RetryAfter    json.RawMessage `json:"retry_after,omitempty"`
	CutRate       float64         `json:"cut_rate"`
}

// UnmarshalJSON accepts retry_after as a duration string ("2s") or a number of seconds.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Faults{ErrorRate: j.ErrorRate, ErrorStatus: j.ErrorStatus, RateLimitRate: j.RateLimitRate, CutRate: j.CutRate}
	if len(j.RetryAfter) > 0 && !isNull(j.RetryAfter) {
		var s string
		if json.Unmarshal(j.RetryAfter, &s) == nil {
			d, ok := parseDuration([]byte(s), time.Second)
			if !ok {
				return fmt.Errorf("retry_after: invalid duration %q", s)
			}
			f.RetryAfter = d
		} else {
			var secs float64
			if err := json.Unmarshal(j.RetryAfter, &secs); err != nil {
				return errors.New("retry_after: want a duration string or seconds")
			}
			f.RetryAfter = time.Duration(secs * float64(time.Second))
		}
	}
	return nil
}

// MarshalJSON renders retry_after as a duration string.
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{ErrorRate: f.ErrorRate, ErrorStatus: f.ErrorStatus, RateLimitRate: f.RateLimitRate, CutRate: f.CutRate}
	if f.RetryAfter > 0 {
		j.RetryAfter, _ = json.Marshal(f.RetryAfter.String())
	}
	return json.Marshal(j)
}

func (f Faults) validate() error {
	for _, r := range []float64{f.ErrorRate, f.RateLimitRate, f.CutRate} {
		if r < 0 || r > 1 {
			return errors.New("rates must be within [0,1]")
		}
	}
	if f.ErrorRate+f.RateLimitRate+f.CutRate > 1 {
		return errors.New("rates must sum to at most 1")
	}
	if f.ErrorStatus != 0 && (f.ErrorStatus < 400 || f.ErrorStatus > 599) {
		return errors.New("error_status must be a 4xx or 5xx code")
	}
	return nil
}

type faultState struct {
	active atomic.Bool
	mu     sync.Mutex
	f      Faults
	rng    *rand.Rand
}

func (fs *faultState) init(seed int64) {
	fs.rng = rand.New(rand.NewPCG(uint64(seed), 0x5eed5eed5eed5eed))
}

// SetFaults replaces the random fault rates; the zero Faults disables them.
func (s *Server) SetFaults(f Faults) {
	fs := &s.faults
	fs.mu.Lock()
	fs.f = f
	fs.mu.Unlock()
	fs.active.Store(f.ErrorRate > 0 || f.RateLimitRate > 0 || f.CutRate > 0)
}

func (s *Server) currentFaults() Faults {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.f
}

// drawFault applies at most one random fault to d. It takes the lock only when rates are set.
func (s *Server) drawFault(d *directives) {
	fs := &s.faults
	if !fs.active.Load() {
		return
	}
	fs.mu.Lock()
	f := fs.f
	x := fs.rng.Float64()
	y := fs.rng.IntN(1 << 20)
	fs.mu.Unlock()
	switch {
	case x < f.ErrorRate:
		d.status = f.ErrorStatus
		if d.status == 0 {
			d.status = 500
		}
	case x < f.ErrorRate+f.RateLimitRate:
		d.status = 429
		if f.RetryAfter > 0 {
			d.retryAfter = f.RetryAfter
		}
	case x < f.ErrorRate+f.RateLimitRate+f.CutRate:
		d.cutAfter = y // reduced modulo the chunk count when streaming
		d.randomCut = true
	}
}

// directives are the per-request controls parsed from "[sim:…]" blocks.
type directives struct {
	status           int
	code             string
	retryAfter       time.Duration
	ttfb             time.Duration
	chunkDelay       time.Duration
	cutAfter         int // -1: none
	randomCut        bool
	streamErrorAfter int // -1: none
	hold             string
	answer           []byte
	hasAnswer        bool
	recall           []byte // answer with what follows the newest copy of this phrase in the prompt
	answerTokens     int    // make the answer this long (a runaway answer), before any cap
}

var simOpen = []byte("[sim:")

// parseDirectives reads every "[sim:…]" block of text. Unknown keys and bad values are ignored.
func parseDirectives(text []byte, d *directives) {
	*d = directives{cutAfter: -1, streamErrorAfter: -1}
	for {
		i := bytes.Index(text, simOpen)
		if i < 0 {
			return
		}
		rest := text[i+len(simOpen):]
		end := bytes.IndexByte(rest, ']')
		if end < 0 {
			return
		}
		block := rest[:end]
		text = rest[end+1:]
		for len(block) > 0 {
			item := block
			if k, v, ok := bytes.Cut(block, []byte{'='}); ok && string(bytes.TrimSpace(k)) == "answer" {
				d.answer, d.hasAnswer = v, true
				break
			}
			if c := bytes.IndexByte(block, ','); c >= 0 {
				item, block = block[:c], block[c+1:]
			} else {
				block = nil
			}
			k, v, _ := bytes.Cut(item, []byte{'='})
			k, v = bytes.TrimSpace(k), bytes.TrimSpace(v)
			switch string(k) {
			case "status":
				if n, err := strconv.Atoi(string(v)); err == nil && n >= 100 && n <= 599 {
					d.status = n
				}
			case "code":
				d.code = string(v)
			case "retry_after":
				if x, ok := parseDuration(v, time.Second); ok {
					d.retryAfter = x
				}
			case "ttfb":
				if x, ok := parseDuration(v, time.Millisecond); ok {
					d.ttfb = x
				}
			case "chunk_delay":
				if x, ok := parseDuration(v, time.Millisecond); ok {
					d.chunkDelay = x
				}
			case "cut_after":
				if n, err := strconv.Atoi(string(v)); err == nil && n >= 0 {
					d.cutAfter = n
				}
			case "stream_error_after":
				if n, err := strconv.Atoi(string(v)); err == nil && n >= 0 {
					d.streamErrorAfter = n
				}
			case "hold":
				d.hold = string(v)
			case "recall":
				d.recall = v
			case "answer_tokens":
				if n, err := strconv.Atoi(string(v)); err == nil && n > 0 {
					d.answerTokens = min(n, maxAnswerTokens)
				}
			}
		}
	}
}

// parseDuration reads a Go duration, or a bare number in unit.
func parseDuration(v []byte, unit time.Duration) (time.Duration, bool) {
	s := string(bytes.TrimSpace(v))
	if s == "" {
		return 0, false
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 {
			return 0, false
		}
		return time.Duration(f * float64(unit)), true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d >= 0
}

// stripDirectives returns text without its "[sim:…]" blocks, using scratch when needed.
func stripDirectives(text, scratch []byte) []byte {
	if !bytes.Contains(text, simOpen) {
		return text
	}
	out := scratch[:0]
	for {
		i := bytes.Index(text, simOpen)
		if i < 0 {
			break
		}
		end := bytes.IndexByte(text[i:], ']')
		if end < 0 {
			break
		}
		out = append(out, text[:i]...)
		out = append(out, ' ')
		text = text[i+end+1:]
	}
	return append(out, text...)
}

// holdSet lets tests freeze a response at a known point and release it.
type holdSet struct {
	mu sync.Mutex
	m  map[string]*hold
}

type hold struct {
	ch       chan struct{}
	released bool
	waiting  int
}

func (hs *holdSet) get(name string) *hold {
	h := hs.m[name]
	if h == nil {
		h = &hold{ch: make(chan struct{})}
		hs.m[name] = h
	}
	return h
}

// Release frees every response held by [sim:hold=NAME], now and later: a release that comes
// before the request arrives is not lost. Use a fresh name per test.
func (s *Server) Release(name string) {
	hs := &s.holds
	hs.mu.Lock()
	h := hs.get(name)
	if !h.released {
		h.released = true
		close(h.ch)
	}
	hs.mu.Unlock()
}

// Waiting reports how many responses are currently held under name.
func (s *Server) Waiting(name string) int {
	hs := &s.holds
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h := hs.m[name]; h != nil {
		return h.waiting
	}
	return 0
}

// holdTimeout bounds a hold so a forgotten Release cannot hang a test forever.
var holdTimeout = 30 * time.Second

// wait blocks until name is released, the hold times out or ctx is done; it reports false
// only when ctx ended.
func (s *Server) wait(ctx context.Context, name string) bool {
	hs := &s.holds
	hs.mu.Lock()
	h := hs.get(name)
	h.waiting++
	hs.mu.Unlock()
	defer func() {
		hs.mu.Lock()
		h.waiting--
		hs.mu.Unlock()
	}()
	t := time.NewTimer(holdTimeout)
	defer t.Stop()
	select {
	case <-h.ch:
		return true
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
