package routing

import (
	"sync"
	"time"
)

// Health tracks one upstream target (provider + model): a circuit breaker over recent
// outcomes and moving averages of its speed. Health outlives config reloads (it is kept per
// process, keyed by provider name, base URL and model) so a reload does not forget that an
// upstream is failing.
type Health struct {
	mu  sync.Mutex
	now func() time.Time

	// Breaker: outcomes in the current and previous window.
	winStart              time.Time
	okCur, errCur         int
	okPrev, errPrev       int
	state                 breakerState
	openUntil             time.Time
	cooldown              time.Duration
	probeInFlight         bool
	ttfbEWMA, tokPerSecEW float64 // seconds, tokens/second; 0 = no sample yet
}

type breakerState int

const (
	stateClosed breakerState = iota
	stateOpen
	stateHalfOpen
)

// BreakerPolicy tunes every breaker.
type BreakerPolicy struct {
	// Window is the length of one counting window; the ratio covers this and the previous one.
	Window time.Duration
	// MinRequests is how many outcomes the windows need before the breaker may open.
	MinRequests int
	// ErrorRatio opens the breaker.
	ErrorRatio float64
	// Cooldown is the first open period; it doubles on every failed probe up to MaxCooldown.
	Cooldown, MaxCooldown time.Duration
}

// DefaultBreaker: open at 50% errors over at least 10 calls in ~20s, probe after 5s.
var DefaultBreaker = BreakerPolicy{Window: 10 * time.Second, MinRequests: 10, ErrorRatio: 0.5,
	Cooldown: 5 * time.Second, MaxCooldown: time.Minute}

func newHealth(now func() time.Time) *Health {
	if now == nil {
		now = time.Now
	}
	return &Health{now: now, winStart: now()}
}

func (h *Health) roll(t time.Time, p BreakerPolicy) {
	for t.Sub(h.winStart) >= p.Window {
		h.okPrev, h.errPrev = h.okCur, h.errCur
		h.okCur, h.errCur = 0, 0
		h.winStart = h.winStart.Add(p.Window)
		if t.Sub(h.winStart) >= p.Window { // idle for more than a window: start afresh
			h.okPrev, h.errPrev = 0, 0
			h.winStart = t
		}
	}
}

// Allow reports whether a call may go to this target now. In the half-open state one probe
// at a time is let through.
func (h *Health) Allow(p BreakerPolicy) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch h.state {
	case stateOpen:
		if h.now().Before(h.openUntil) {
			return false
		}
		h.state = stateHalfOpen
		fallthrough
	case stateHalfOpen:
		if h.probeInFlight {
			return false
		}
		h.probeInFlight = true
		return true
	}
	return true
}

// Healthy reports whether the breaker is closed (no allowance taken).
func (h *Health) Healthy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state == stateClosed || (h.state == stateOpen && !h.now().Before(h.openUntil) && !h.probeInFlight)
}

// State names the breaker state for /v1/providers and metrics.
func (h *Health) State() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch h.state {
	case stateOpen:
		return "open"
	case stateHalfOpen:
		return "half_open"
	}
	return "closed"
}

// Record adds an outcome. Only upstream failures count (not the caller's 4xx).
func (h *Health) Record(ok bool, p BreakerPolicy) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.now()
	h.roll(t, p)
	if ok {
		h.okCur++
	} else {
		h.errCur++
	}
	switch h.state {
	case stateHalfOpen:
		h.probeInFlight = false
		if ok {
			h.state, h.cooldown = stateClosed, 0
			h.okPrev, h.errPrev, h.okCur, h.errCur = 0, 0, 1, 0
		} else {
			h.open(t, p)
		}
	case stateClosed:
		total := h.okCur + h.errCur + h.okPrev + h.errPrev
		errs := h.errCur + h.errPrev
		if total >= p.MinRequests && float64(errs) >= p.ErrorRatio*float64(total) {
			h.open(t, p)
		}
	}
}

func (h *Health) open(t time.Time, p BreakerPolicy) {
	if h.cooldown == 0 {
		h.cooldown = p.Cooldown
	} else {
		h.cooldown = min(2*h.cooldown, p.MaxCooldown)
	}
	h.state, h.openUntil = stateOpen, t.Add(h.cooldown)
}

// ObserveSpeed folds a successful call's time to first byte and output rate into the EWMAs.
func (h *Health) ObserveSpeed(ttfb time.Duration, outputTokens int64, total time.Duration) {
	const alpha = 0.2
	h.mu.Lock()
	defer h.mu.Unlock()
	s := ttfb.Seconds()
	if h.ttfbEWMA == 0 {
		h.ttfbEWMA = s
	} else {
		h.ttfbEWMA += alpha * (s - h.ttfbEWMA)
	}
	if gen := (total - ttfb).Seconds(); outputTokens > 0 && gen > 0 {
		r := float64(outputTokens) / gen
		if h.tokPerSecEW == 0 {
			h.tokPerSecEW = r
		} else {
			h.tokPerSecEW += alpha * (r - h.tokPerSecEW)
		}
	}
}

// Speed returns the moving averages (0 when unknown).
func (h *Health) Speed() (ttfb time.Duration, tokensPerSecond float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Duration(h.ttfbEWMA * float64(time.Second)), h.tokPerSecEW
}

// healthRegistry keeps Health per target for the life of the process.
var healthRegistry sync.Map // string → *Health

func healthFor(key string, now func() time.Time) *Health {
	if h, ok := healthRegistry.Load(key); ok {
		return h.(*Health)
	}
	h, _ := healthRegistry.LoadOrStore(key, newHealth(now))
	return h.(*Health)
}
