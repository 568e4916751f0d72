package tokens

import (
	"math"
	"sync"
)

// Calibrator learns, per model, the ratio between the prompt tokens a provider reports and our
// estimate (an EWMA, clamped), to correct estimates for tokenizers we do not have (Claude,
// Gemini). It is safe for concurrent use; the zero value is not usable, use NewCalibrator.
type Calibrator struct {
	alpha, lo, hi float64
	mu            sync.RWMutex
	ratio         map[string]float64
}

// Calibration defaults: EWMA weight of a new observation, and the clamp on the ratio.
const (
	DefaultAlpha    = 0.2
	DefaultMinRatio = 0.5
	DefaultMaxRatio = 2.0
)

// MaxKeys bounds the keys a Calibrator learns (keys may be per workspace and model); when
// full, half of them are forgotten (they fall back to ratio 1 and learn again).
const MaxKeys = 1 << 14

// NewCalibrator returns a calibrator; alpha in (0,1] weighs each new observation, and ratios
// are clamped to [lo, hi]. Zero or invalid arguments take the defaults.
func NewCalibrator(alpha, lo, hi float64) *Calibrator {
	if !(alpha > 0 && alpha <= 1) {
		alpha = DefaultAlpha
	}
	if !(lo > 0) {
		lo = DefaultMinRatio
	}
	if !(hi >= lo) {
		hi = math.Max(DefaultMaxRatio, lo)
	}
	return &Calibrator{alpha: alpha, lo: lo, hi: hi, ratio: map[string]float64{}}
}

// Observe records one request: our estimate and the provider-reported prompt tokens.
// Observations with a non-positive side are ignored. The first observation sets the ratio.
func (c *Calibrator) Observe(model string, estimated, actual int) {
	if estimated <= 0 || actual <= 0 {
		return
	}
	r := math.Min(math.Max(float64(actual)/float64(estimated), c.lo), c.hi)
	c.mu.Lock()
	if old, ok := c.ratio[model]; ok {
		r = old + c.alpha*(r-old)
	} else if len(c.ratio) >= MaxKeys {
		drop := true
		for k := range c.ratio {
			if drop {
				delete(c.ratio, k)
			}
			drop = !drop
		}
	}
	c.ratio[model] = r
	c.mu.Unlock()
}

// Ratio returns the learned ratio for model (1 when none was observed).
func (c *Calibrator) Ratio(model string) float64 {
	c.mu.RLock()
	r, ok := c.ratio[model]
	c.mu.RUnlock()
	if !ok {
		return 1
	}
	return r
}

// Adjust corrects an estimate with the learned ratio, rounding to the nearest token.
func (c *Calibrator) Adjust(model string, estimate int) int {
	return int(math.Round(float64(estimate) * c.Ratio(model)))
}
