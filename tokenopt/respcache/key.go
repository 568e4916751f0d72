package respcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"slices"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// Key identifies one cacheable request: SHA-256 over a version tag, the workspace and the
// canonical request body.
type Key [sha256.Size]byte

// String is the key in hex, for logs and coalescing maps.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// Policy tunes which requests are cacheable. The zero value is the safe default.
type Policy struct {
	// AllowSampled makes requests with a non-zero (or absent, i.e. default 1) temperature,
	// n > 1 or a sampling-only parameter cacheable. The caller opts in per route or per request: such answers are samples,
	// and replaying one changes what the caller asked for (a fresh sample each time).
	AllowSampled bool
}

// ignoredFields are top-level request fields that do not change the answer, so they are left out
// of the key:
//   - stream, stream_options: a cached answer replays as either shape (Entry.Body /
//     Entry.WriteStream), and include_usage only toggles the final usage chunk;
//   - user, safety_identifier, metadata, store: caller-side labels for abuse monitoring,
//     storage and dashboards; the workspace already scopes the cache;
//   - prompt_cache_key, prompt_cache_retention, service_tier: steer the provider's prompt
//     cache and capacity, not the output.
//
// Everything else (model, messages, tools, tool_choice, sampling parameters, seed, limits,
// response_format, logprobs, reasoning_effort, unknown fields…) is part of the key.
var ignoredFields = map[string]bool{
	"stream": true, "stream_options": true,
	"user": true, "safety_identifier": true, "metadata": true, "store": true,
	"prompt_cache_key": true, "prompt_cache_retention": true, "service_tier": true,
}

const keyVersion = "btl-respcache/v1\x00"

var errSyntax = errors.New("respcache: malformed JSON")

// MakeKey computes the key of a chat-completions body for a workspace under a policy. ok is false
// when the request must not be cached: the body is not a JSON object, or it asks for sampled
// output (temperature absent or non-zero, n > 1, or a sampling-only parameter: top_p other than
// 1, top_k, min_p, typical_p, top_a, best_of) and the policy does not allow that.
//
// Canonical form: insignificant whitespace removed, object keys sorted recursively (byte order
// of the unescaped key), strings re-encoded minimally (only ", \ and control characters
// escaped), non-integer numbers re-formatted (1.0 == 1, 1e2 == 100), array order kept. The body is
// expected to have passed providers.ParseChatRequest; the scanner rejects structural errors but
// is not a full validator.
func MakeKey(workspace string, body []byte, p Policy) (Key, bool) {
	c := canonPool.Get().(*canon)
	defer canonPool.Put(c)
	c.h.Reset()
	c.out = c.out[:0]
	c.write([]byte(keyVersion))
	c.write(strconv.AppendInt(nil, int64(len(workspace)), 10))
	c.write([]byte{0})
	c.write([]byte(workspace))
	c.write([]byte{0})
	sampled, err := c.top(body)
	if err != nil || (sampled && !p.AllowSampled) {
		return Key{}, false
	}
	c.flush()
	var k Key
	c.h.Sum(k[:0])
	return k, true
}

var canonPool = sync.Pool{New: func() any { return &canon{h: sha256.New(), out: make([]byte, 0, 40<<10)} }}

type canon struct {
	h   hash.Hash
	out []byte
}

func (c *canon) write(b []byte) {
	c.out = append(c.out, b...)
	if len(c.out) >= 32<<10 {
		c.flush()
	}
}

func (c *canon) byte(b byte) {
	c.out = append(c.out, b)
	if len(c.out) >= 32<<10 {
		c.flush()
	}
}

func (c *canon) flush() {
	c.h.Write(c.out)
	c.out = c.out[:0]
}

type member struct {
	key        string // unescaped
	rawKey     []byte // quoted, as written
	start, end int    // value span
}

// top canonicalises the request object, dropping ignored fields, and reports whether the request
// asks for sampled output.
func (c *canon) top(b []byte) (sampled bool, err error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false, errSyntax
	}
	ms, end, err := members(b, i)
	if err != nil {
		return false, err
	}
	if skipWS(b, end) != len(b) {
		return false, errSyntax
	}
	sampled = true // OpenAI's default temperature is 1
	kept := ms[:0]
	for _, m := range ms {
		v := b[m.start:m.end]
		switch m.key {
		case "temperature":
			if string(v) != "null" {
				f, perr := strconv.ParseFloat(string(v), 64)
				if perr != nil {
					return false, errSyntax
				}
				sampled = f != 0
			}
		}
		if ignoredFields[m.key] {
			continue
		}
		kept = append(kept, m)
	}
	for _, m := range kept {
		v := string(b[m.start:m.end])
		switch m.key {
		case "n":
			sampled = sampled || (v != "null" && v != "1")
		case "top_p":
			// 1 is top_p's no-op value; anything else is a caller who meant to sample, even at
			// temperature 0 (the coalescer's rule, tokenopt/coalesce.Deterministic).
			if v != "null" {
				f, perr := strconv.ParseFloat(v, 64)
				sampled = sampled || perr != nil || f != 1
			}
		case "top_k", "min_p", "typical_p", "top_a", "best_of":
			sampled = sampled || v != "null"
		}
	}
	return sampled, c.object(b, kept)
}

// members scans the object at b[i] ('{') and returns its members sorted by key and the index
// after the closing brace.
func members(b []byte, i int) ([]member, int, error) {
	i++
	var ms []member
	i = skipWS(b, i)
	if i < len(b) && b[i] == '}' {
		return ms, i + 1, nil
	}
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return nil, 0, errSyntax
		}
		ks := i
		ke, esc, err := skipString(b, i)
		if err != nil {
			return nil, 0, err
		}
		m := member{rawKey: b[ks:ke]}
		if esc {
			if err := json.Unmarshal(m.rawKey, &m.key); err != nil {
				return nil, 0, errSyntax
			}
		} else {
			m.key = string(b[ks+1 : ke-1])
		}
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, errSyntax
		}
		i = skipWS(b, i+1)
		m.start = i
		if i, err = skipValue(b, i); err != nil {
			return nil, 0, err
		}
		m.end = i
		ms = append(ms, m)
		i = skipWS(b, i)
		if i >= len(b) {
			return nil, 0, errSyntax
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return nil, 0, errSyntax
		}
		i++
	}
	if !slices.IsSortedFunc(ms, cmpMember) {
		slices.SortStableFunc(ms, cmpMember)
	}
	return ms, i + 1, nil
}

func cmpMember(a, b member) int {
	switch {
	case a.key < b.key:
		return -1
	case a.key > b.key:
		return 1
	}
	return 0
}

func (c *canon) object(b []byte, ms []member) error {
	c.byte('{')
	for n, m := range ms {
		if n > 0 {
			c.byte(',')
		}
		c.str(m.rawKey, m.key)
		c.byte(':')
		if err := c.value(b, m.start, m.end); err != nil {
			return err
		}
	}
	c.byte('}')
	return nil
}

// value canonicalises the value spanning b[i:end] (already validated structurally by skipValue).
func (c *canon) value(b []byte, i, end int) error {
	switch b[i] {
	case '{':
		ms, _, err := members(b, i)
		if err != nil {
			return err
		}
		return c.object(b, ms)
	case '[':
		c.byte('[')
		i = skipWS(b, i+1)
		first := true
		for b[i] != ']' {
			if !first {
				i = skipWS(b, i+1) // past ','
			}
			first = false
			e, err := skipValue(b, i)
			if err != nil {
				return err
			}
			if err := c.value(b, i, e); err != nil {
				return err
			}
			i = skipWS(b, e)
			if b[i] == ',' {
				c.byte(',')
			}
		}
		c.byte(']')
		return nil
	case '"':
		raw := b[i:end]
		if bytes.IndexByte(raw, '\\') < 0 {
			c.write(raw)
			return nil
		}
		var err error
		if c.out, err = appendCanonString(c.out, raw); err != nil {
			return err
		}
		if len(c.out) >= 32<<10 {
			c.flush()
		}
		return nil
	case 't', 'f', 'n':
		c.write(b[i:end])
		return nil
	default:
		num := b[i:end]
		if bytes.ContainsAny(num, ".eE") {
			f, err := strconv.ParseFloat(string(num), 64)
			if err != nil {
				return errSyntax
			}
			c.out = strconv.AppendFloat(c.out, f, 'g', -1, 64)
			return nil
		}
		c.write(num)
		return nil
	}
}

// appendCanonString appends the quoted JSON string raw (with escapes) in minimal form: the same
// bytes appendMinimal gives for its decoded value, without decoding it into a Go string.
func appendCanonString(b, raw []byte) ([]byte, error) {
	body := raw[1 : len(raw)-1]
	b = append(b, '"')
	for len(body) > 0 {
		k := bytes.IndexByte(body, '\\')
		if k < 0 {
			b = append(b, body...)
			break
		}
		b = append(b, body[:k]...)
		body = body[k:]
		if len(body) < 2 {
			return nil, errSyntax
		}
		switch e := body[1]; e {
		case '"', '\\':
			b = append(b, '\\', e)
			body = body[2:]
		case '/':
			b = append(b, '/')
			body = body[2:]
		case 'n', 'r', 't', 'b', 'f':
			b = append(b, '\\', e)
			body = body[2:]
		case 'u':
			r, n := decodeU(body)
			if n == 0 {
				return nil, errSyntax
			}
			body = body[n:]
			switch {
			case r < 0x20 || r == '"' || r == '\\':
				b = appendEscaped(b, byte(r))
			default:
				b = utf8.AppendRune(b, r)
			}
		default:
			return nil, errSyntax
		}
	}
	return append(b, '"'), nil
}

// decodeU decodes a \uXXXX escape (and its low surrogate, if any) at the start of s.
func decodeU(s []byte) (rune, int) {
	r, ok := hex4(s)
	if !ok {
		return 0, 0
	}
	if utf16.IsSurrogate(r) {
		if r2, ok := hex4(s[6:]); ok && len(s) >= 12 && s[6] == '\\' {
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				return d, 12
			}
		}
		return utf8.RuneError, 6
	}
	return r, 6
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// str writes a string minimally escaped: raw when it was written without escapes.
func (c *canon) str(raw []byte, s string) {
	if raw != nil && bytes.IndexByte(raw, '\\') < 0 {
		c.write(raw)
		return
	}
	c.out = appendMinimal(c.out, s)
	if len(c.out) >= 32<<10 {
		c.flush()
	}
}

func appendMinimal(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch < 0x20 || ch == '"' || ch == '\\' {
			b = appendEscaped(b, ch)
		} else {
			b = append(b, ch)
		}
	}
	return append(b, '"')
}

// appendEscaped appends the minimal escape of a control character, quote or backslash.
func appendEscaped(b []byte, ch byte) []byte {
	const hexd = "0123456789abcdef"
	switch ch {
	case '"', '\\':
		return append(b, '\\', ch)
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	}
	return append(b, '\\', 'u', '0', '0', hexd[ch>>4], hexd[ch&0xF])
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string starting at b[i] and whether it has escapes.
func skipString(b []byte, i int) (int, bool, error) {
	start := i + 1
	i = start
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, false, errSyntax
		}
		i += j
		// The quote ends the string unless an odd number of backslashes precede it.
		n := 0
		for k := i - 1; k >= start && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return i + 1, bytes.IndexByte(b[start:i], '\\') >= 0, nil
		}
		i++
	}
}

func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch b[i] {
	case '"':
		e, _, err := skipString(b, i)
		return e, err
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e, _, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errSyntax
	case 't':
		return lit(b, i, "true")
	case 'f':
		return lit(b, i, "false")
	case 'n':
		return lit(b, i, "null")
	default:
		j := i
		for j < len(b) && (b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E' || (b[j] >= '0' && b[j] <= '9')) {
			j++
		}
		if j == i {
			return 0, errSyntax
		}
		return j, nil
	}
}

func lit(b []byte, i int, s string) (int, error) {
	if !bytes.HasPrefix(b[i:], []byte(s)) {
		return 0, errSyntax
	}
	return i + len(s), nil
}

// splitText cuts s into pieces of about n bytes, never inside a UTF-8 sequence.
func splitText(s string, n int) []string {
	var out []string
	for len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if cut == 0 {
			cut = n
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}
