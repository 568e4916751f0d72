// Package metrics holds BTL Runtime's Prometheus collectors. They are created once per
// process and registered into every config's registry, so counters keep counting across
// Caddy config reloads (Caddy builds a fresh registry per config; a collector registered
// only into the first one would freeze at its last value after a reload).
//
// Labels are bounded: provider names come from the config, the model class is a public slug
// from the config or "pinned", status is a class ("2xx", "4xx", "5xx"), cache outcomes and
// savings levers are fixed sets. Nothing is labelled per key, workspace or request: that
// belongs in the ledger.
//
// The package imports no Caddy code; the handlers call Register from Provision with
// ctx.GetMetricsRegistry().
package metrics

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric name.
const Namespace = "btl"

// Levers are the savings levers, in the order of the ledger's savings columns.
var Levers = []string{"prompt_cache", "response_cache", "coalesce", "compression", "dedupe", "output_budget", "routing"}

// TokenKinds are the usage normal form's token kinds.
var TokenKinds = []string{"input_uncached", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning"}

// LedgerStats is what the ledger gauges read at scrape time.
type LedgerStats struct {
	PendingRows  int64
	SpoolBytes   int64
	InsertErrors int64
}

// Request is one completed request, as the meter saw it.
type Request struct {
	Provider     string // "" when no provider was called
	ModelClass   string // a public slug, "pinned", or "" (none / not resolvable)
	Status       int
	CacheOutcome string // hit|miss|coalesced|bypass or ""
	// Tokens by kind, in TokenKinds order.
	Tokens [6]int64
	// Money, in micro-dollars. Savings in Levers order.
	CostMicros, BaselineMicros int64
	Savings                    [7]int64
	// Latency is the whole request; TTFT the time to the first byte from upstream (0: unknown).
	Latency, TTFT time.Duration
	Upstream      bool // a provider was called (latency histograms only count those)
}

// Set is the process's collectors.
type Set struct {
	requests   *prometheus.CounterVec
	tokens     *prometheus.CounterVec
	cost       *prometheus.CounterVec
	baseline   *prometheus.CounterVec
	savings    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	ttft       *prometheus.HistogramVec
	cache      *prometheus.CounterVec
	refused    prometheus.Counter
	emptyLen   prometheus.Counter
	capCuts    prometheus.Counter
	writeErrs  prometheus.Counter
	pending    prometheus.GaugeFunc
	spool      prometheus.GaugeFunc
	insertErrs prometheus.CounterFunc

	source  atomic.Pointer[func() LedgerStats]
	breaker *breakerCollector
}

// breakerCollector reports each configured provider's circuit-breaker state:
// 0 closed, 1 half-open, 2 open. Providers come from the newest config, so labels are bounded
// by configuration.
type breakerCollector struct {
	desc   *prometheus.Desc
	source atomic.Pointer[func() map[string]string]
}

func (b *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	fn := b.source.Load()
	if fn == nil {
		return
	}
	for provider, state := range (*fn)() {
		v := 0.0
		switch state {
		case "half_open":
			v = 1
		case "open":
			v = 2
		}
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, v, provider)
	}
}

// SetBreakerSource sets what the breaker gauge reads: provider name → "closed", "half_open"
// or "open". The newest config wins.
func (s *Set) SetBreakerSource(fn func() map[string]string) {
	if fn != nil {
		s.breaker.source.Store(&fn)
	}
}

var (
	once sync.Once
	set  *Set
)

// Default returns the process-wide collectors, creating them on first use.
func Default() *Set {
	once.Do(func() { set = newSet() })
	return set
}

func newSet() *Set {
	s := &Set{}
	latencyBuckets := []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 40, 80, 160}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "requests_total",
		Help: "Metered requests by provider (\"none\" when no upstream was called), model class (public slug, \"pinned\" or \"none\") and status class."},
		[]string{"provider", "model_class", "status_class"})
	s.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "tokens_total",
		Help: "Tokens billed, by kind of the usage normal form."}, []string{"kind"})
	s.cost = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "cost_microdollars_total",
		Help: "What requests cost, in micro-dollars (1e-6 USD), by provider."}, []string{"provider"})
	s.baseline = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "baseline_microdollars_total",
		Help: "What requests would have cost without the gateway's optimisations, in micro-dollars, by provider."}, []string{"provider"})
	s.savings = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "savings_microdollars_total",
		Help: "Savings in micro-dollars by lever."}, []string{"lever"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "upstream_latency_seconds",
		Help: "Whole-request latency of requests that called an upstream, by provider.", Buckets: latencyBuckets}, []string{"provider"})
	s.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "time_to_first_token_seconds",
		Help: "Time to the upstream's first byte, by provider.", Buckets: latencyBuckets}, []string{"provider"})
	s.cache = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "cache_outcomes_total",
		Help: "Response-cache and coalescing outcomes (hit, miss, coalesced, bypass)."}, []string{"outcome"})
	s.emptyLen = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "empty_length_finishes_total",
		Help: "Answers cut by a gateway-set output cap with no content at all (finish_reason length): a budget too small for a reasoning model."})
	s.capCuts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "gateway_cap_cuts_total",
		Help: "Answers that stopped at an output cap the gateway set because the caller gave none (finish_reason length)."})
	s.refused = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "credit_reservations_refused_total",
		Help: "Requests refused with 402 because the workspace's credits could not cover them."})
	s.writeErrs = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "ledger_write_errors_total",
		Help: "Ledger rows the spool refused (disk full, closed): money not recorded."})
	s.pending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "ledger_queue_rows",
		Help: "Ledger rows spooled but not yet committed to the database."}, func() float64 { return float64(s.ledger().PendingRows) })
	s.spool = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "ledger_spool_bytes",
		Help: "Bytes of the ledger's write-ahead spool on disk."}, func() float64 { return float64(s.ledger().SpoolBytes) })
	s.insertErrs = prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "ledger_insert_errors_total",
		Help: "Failed database inserts of spooled rows (each is retried), since the ledger was opened."}, func() float64 { return float64(s.ledger().InsertErrors) })
	s.breaker = &breakerCollector{desc: prometheus.NewDesc(Namespace+"_upstream_breaker_state",
		"Circuit-breaker state per provider: 0 closed, 1 half-open, 2 open.", []string{"provider"}, nil)}
	// Known label values start at zero so dashboards see the series before the first event.
	for _, k := range TokenKinds {
		s.tokens.WithLabelValues(k)
	}
	for _, l := range Levers {
		s.savings.WithLabelValues(l)
	}
	return s
}

func (s *Set) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.requests, s.tokens, s.cost, s.baseline, s.savings, s.latency, s.ttft, s.cache,
		s.refused, s.emptyLen, s.capCuts, s.writeErrs, s.pending, s.spool, s.insertErrs, s.breaker}
}

// Register adds the collectors to reg (a config's registry), tolerating collectors that are
// already there. A nil reg is a no-op.
func (s *Set) Register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range s.collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// SetLedgerSource sets what the ledger gauges read. The newest config wins; the ledger it
// names is shared across reloads, so the gauges keep their meaning.
func (s *Set) SetLedgerSource(fn func() LedgerStats) {
	if fn != nil {
		s.source.Store(&fn)
	}
}

func (s *Set) ledger() LedgerStats {
	if fn := s.source.Load(); fn != nil {
		return (*fn)()
	}
	return LedgerStats{}
}

// StatusClass maps a status code to "2xx", "4xx", ….
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}

// Observe records one completed request.
func (s *Set) Observe(r Request) {
	provider := r.Provider
	if provider == "" {
		provider = "none"
	}
	class := r.ModelClass
	if class == "" {
		class = "none"
	}
	s.requests.WithLabelValues(provider, class, StatusClass(r.Status)).Inc()
	for i, n := range r.Tokens {
		if n > 0 {
			s.tokens.WithLabelValues(TokenKinds[i]).Add(float64(n))
		}
	}
	if r.CostMicros > 0 {
		s.cost.WithLabelValues(provider).Add(float64(r.CostMicros))
	}
	if r.BaselineMicros > 0 {
		s.baseline.WithLabelValues(provider).Add(float64(r.BaselineMicros))
	}
	for i, n := range r.Savings {
		if n > 0 {
			s.savings.WithLabelValues(Levers[i]).Add(float64(n))
		}
	}
	if r.Upstream {
		s.latency.WithLabelValues(provider).Observe(r.Latency.Seconds())
		if r.TTFT > 0 {
			s.ttft.WithLabelValues(provider).Observe(r.TTFT.Seconds())
		}
	}
	switch r.CacheOutcome {
	case "hit", "miss", "coalesced", "bypass":
		s.cache.WithLabelValues(r.CacheOutcome).Inc()
	}
}

// CreditRefused counts a 402 for insufficient credits.
func (s *Set) CreditRefused() { s.refused.Inc() }

// EmptyLength counts an answer that hit a gateway-set cap before producing any content.
func (s *Set) EmptyLength() { s.emptyLen.Inc() }

// LedgerWriteError counts a row the spool refused.
func (s *Set) LedgerWriteError() { s.writeErrs.Inc() }

// CapCut counts an answer that stopped at the output cap the gateway set (finish_reason
// length where the caller gave no cap).
func (s *Set) CapCut() { s.capCuts.Inc() }
