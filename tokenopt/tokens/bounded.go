package tokens

import (
	"context"
	"unicode/utf8"

	tiktoken "github.com/pkoukk/tiktoken-go"
)

// Bounds on the work one count may do. tiktoken's byte-pair merge is quadratic in the length
// of one pre-tokenized piece, and a run without spaces (base64, minified code, one repeated
// letter) is one piece: 1 MB of it took minutes of CPU. Runs are cut into short chunks, which
// keeps every merge cheap, and only the first ExactLimit bytes are encoded; the rest is
// extrapolated at the rate measured on the part that was.
const (
	// MaxRun is the longest run without whitespace encoded as one piece. Real tokens are far
	// shorter, so cutting longer runs moves the count by a token at a cut, at most.
	MaxRun = 128
	// ExactLimit is how many bytes of one text are encoded exactly (about 70 ms of CPU here).
	ExactLimit = 256 << 10
	// segment is how much text is encoded between two looks at the context.
	segment = 16 << 10
)

// CountContext is Count with bounded work that stops when ctx is done (the client left, the
// server is shutting down); it then returns ctx's error and the count so far.
func CountContext(ctx context.Context, model, text string) (int, error) {
	if text == "" {
		return 0, nil
	}
	tk, err := get(EncodingFor(model))
	if err != nil {
		return Estimate(len(text)), nil
	}
	return countBounded(ctx, tk, text)
}

func countBounded(ctx context.Context, tk *tiktoken.Tiktoken, text string) (int, error) {
	exact := text
	if len(exact) > ExactLimit {
		exact = exact[:cutBefore(exact, ExactLimit)]
	}
	n := 0
	for rest := exact; rest != ""; {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		seg := rest
		if len(seg) > segment {
			seg = seg[:cutBefore(seg, segment)]
		}
		n += encodeRuns(tk, seg)
		rest = rest[len(seg):]
	}
	if len(exact) < len(text) {
		// Extrapolate the measured tokens-per-byte over what was not encoded (rounding up,
		// as Estimate does, so a reservation made from it errs high).
		rem := int64(len(text) - len(exact))
		n += int((int64(n)*rem + int64(len(exact)) - 1) / int64(len(exact)))
	}
	return n, nil
}

// encodeRuns encodes s, cutting every run of more than MaxRun bytes without whitespace into
// MaxRun-byte chunks (at rune boundaries).
func encodeRuns(tk *tiktoken.Tiktoken, s string) int {
	n, start, run := 0, 0, 0
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			run = 0
			continue
		}
		if run++; run <= MaxRun {
			continue
		}
		// s[i-MaxRun:i] is a full chunk of a long run: encode everything up to its start
		// with the text before it, then the chunk alone.
		cut := i - MaxRun
		for cut > start && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if cut > start && s[cut-1] == ' ' {
			cut-- // the space before a word belongs to the word's piece
		}
		end := i
		for end > cut && !utf8.RuneStart(s[end]) {
			end--
		}
		if cut > start {
			n += encode(tk, s[start:cut])
		}
		if end > cut {
			n += encode(tk, s[cut:end])
		}
		start, run = end, i-end+1
	}
	if start < len(s) {
		n += encode(tk, s[start:])
	}
	return n
}

// encode is the one call into tiktoken; tests wrap it to see the pieces it is given.
var encode = func(tk *tiktoken.Tiktoken, s string) int { return len(tk.EncodeOrdinary(s)) }

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// cutBefore is where to cut s so that the first part is at most limit bytes: before a space
// that follows a non-space (o200k and cl100k attach a leading space to the next word, so the
// pieces on either side are the ones the whole text would have), else at a rune boundary.
func cutBefore(s string, limit int) int {
	for i := limit; i > limit-MaxRun && i > 0; i-- {
		if s[i] == ' ' && !isSpace(s[i-1]) {
			return i
		}
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	if i == 0 {
		return limit
	}
	return i
}
