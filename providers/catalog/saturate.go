package catalog

import "math"

// Money arithmetic that cannot wrap. A request can name absurd numbers (max_tokens 2^63−1, n,
// a hostile upstream's usage), and a product that wraps past MaxInt64 turns a worst case into
// a tiny or negative reservation. These saturate at MaxInt64 instead; negative operands are
// treated as zero, since no price, token count or cost below zero exists.

// MulSat returns a×b, or math.MaxInt64 when the product does not fit.
func MulSat(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// AddSat returns a+b, or math.MaxInt64 when the sum does not fit.
func AddSat(a, b int64) int64 {
	a, b = max(a, 0), max(b, 0)
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
