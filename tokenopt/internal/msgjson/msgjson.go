// Package msgjson holds the byte-level helpers the token optimizers share: it locates the
// messages of an OpenAI chat-completions body without decoding them, reads the few fields of a
// message the optimizers need, and decodes/encodes JSON strings quickly. Everything it does not
// return stays as the caller wrote it.
package msgjson

import (
	"bytes"
	"errors"
	"slices"
	"unicode/utf8"
	"unsafe"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// ErrBadJSON is returned for bodies the scanner cannot delimit.
var ErrBadJSON = errors.New("msgjson: malformed JSON")

// NoSpan marks an absent field.
var NoSpan = providers.Span{Start: -1, End: -1}

// Message is one element of the messages array, as raw bytes plus the fields the optimizers read.
type Message struct {
	// Raw is the element's bytes; Pos is its span inside the messages array.
	Raw []byte
	Pos providers.Span
	// Role is decoded (the common roles without allocating). Content, ToolCallID and ToolCalls
	// are the spans of those values inside Raw, or NoSpan; ToolCallID is left undecoded because
	// only masking reads it.
	Role       string
	Content    providers.Span
	ToolCallID providers.Span
	ToolCalls  providers.Span
}

// ContentRaw returns the raw JSON of the content value, or nil.
func (m *Message) ContentRaw() []byte { return m.Value(m.Content) }

// Value returns the raw JSON at span s of Raw, or nil for NoSpan.
func (m *Message) Value(s providers.Span) []byte {
	if s.Start < 0 {
		return nil
	}
	return m.Raw[s.Start:s.End]
}

// Parse finds the messages array of body and scans its elements. arr is the array's span in
// body. Elements that are not objects are an error.
func Parse(body []byte) (arr providers.Span, msgs []Message, err error) {
	return ParseAppend(make([]Message, 0, 16), body, nil, nil)
}

// ParseAppend is Parse appending the messages to dst[:0], so that a caller can reuse one
// slice across calls (on error dst's backing array may hold partial results). It also sets
// spans[k] (spans must be as long as keys) to the span of the value of the top-level key
// keys[k] ("messages" excepted), or NoSpan, as providers.FindTopLevel would find it.
//
// It reads body once: the scan that delimits the messages array also parses its elements,
// where FindTopLevel followed by a parse would read the array two or three times.
func ParseAppend(dst []Message, body []byte, keys []string, spans []providers.Span) (arr providers.Span, msgs []Message, err error) {
	arr, msgs, _, err = parseTop(dst, nil, false, body, keys, spans)
	return arr, msgs, err
}

// Member is one top-level member of a body: its key as written (quoted, escapes kept) and
// the span of its value.
type Member struct {
	Key []byte
	Val providers.Span
}

// ParseAll is ParseAppend that also appends every top-level member, in order and duplicates
// included, to top[:0]: a later reader of the top level needs no walk of its own.
func ParseAll(dst []Message, top []Member, body []byte, keys []string, spans []providers.Span) (arr providers.Span, msgs []Message, members []Member, err error) {
	return parseTop(dst, top[:0], true, body, keys, spans)
}

func parseTop(dst []Message, top []Member, collect bool, body []byte, keys []string, spans []providers.Span) (arr providers.Span, msgs []Message, members []Member, err error) {
	fail := func(err error) (providers.Span, []Message, []Member, error) {
		return providers.Span{}, nil, nil, err
	}
	for k := range spans {
		spans[k] = NoSpan
	}
	found := false
	var perr error // why the last "messages" value is not an array of objects
	// The walk is providers.FindTopLevel's: the last occurrence of a key wins and any
	// malformed top-level value is an error.
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return fail(ErrBadJSON)
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return fail(ErrBadJSON)
	}
	for i < len(body) {
		if body[i] != '"' {
			return fail(ErrBadJSON)
		}
		ke, err := skipString(body, i)
		if err != nil {
			return fail(err)
		}
		key := body[i:ke]
		i = skipSpace(body, ke)
		if i >= len(body) || body[i] != ':' {
			return fail(ErrBadJSON)
		}
		i = skipSpace(body, i+1)
		var ve int
		if providers.KeyEquals(key, "messages") {
			// A value that does not parse must still be skippable (a later "messages" would
			// win), or the whole body is malformed.
			ve, dst, perr = parseArray(body, i, dst[:0])
			if perr != nil {
				if ve, err = skipValue(body, i); err != nil {
					return fail(err)
				}
			}
			arr, found = providers.Span{Start: i, End: ve}, true
		} else {
			if ve, err = skipValue(body, i); err != nil {
				return fail(err)
			}
			for k, name := range keys {
				if providers.KeyEquals(key, name) {
					spans[k] = providers.Span{Start: i, End: ve}
				}
			}
		}
		if collect {
			top = append(top, Member{Key: key, Val: providers.Span{Start: i, End: ve}})
		}
		i = skipSpace(body, ve)
		if i >= len(body) {
			return fail(ErrBadJSON)
		}
		if body[i] == '}' {
			if !found || perr != nil {
				return fail(ErrBadJSON)
			}
			return arr, dst, top, nil
		}
		if body[i] != ',' {
			return fail(ErrBadJSON)
		}
		i = skipSpace(body, i+1)
	}
	return fail(ErrBadJSON)
}

// parseArray parses the array of message objects at body[i], appending to msgs. end is just
// past the array.
func parseArray(body []byte, i int, msgs []Message) (end int, _ []Message, err error) {
	start := i
	if i >= len(body) || body[i] != '[' {
		return 0, msgs, ErrBadJSON
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		return i + 1, msgs, nil
	}
	for i < len(body) {
		m, end, err := parseMessage(body, i)
		if err != nil {
			return 0, msgs, err
		}
		m.Raw = body[i:end]
		m.Pos = providers.Span{Start: i - start, End: end - start}
		msgs = append(msgs, m)
		i = skipSpace(body, end)
		if i >= len(body) {
			return 0, msgs, ErrBadJSON
		}
		if body[i] == ']' {
			return i + 1, msgs, nil
		}
		if body[i] != ',' {
			return 0, msgs, ErrBadJSON
		}
		i = skipSpace(body, i+1)
	}
	return 0, msgs, ErrBadJSON
}

// ParseMessage reads one message object; raw is exactly the object's bytes.
func ParseMessage(raw []byte) (Message, error) {
	if len(raw) == 0 {
		return Message{}, ErrBadJSON
	}
	m, end, err := parseMessage(raw, 0)
	if err != nil {
		return m, err
	}
	m.Raw = raw[:end]
	m.Pos = providers.Span{Start: 0, End: end}
	return m, nil
}

// parseMessage reads the fields of the message object at b[i]; end is just past it. Keys with
// escapes are compared raw, as EachKey passes them.
func parseMessage(b []byte, i int) (m Message, end int, err error) {
	m = Message{Content: NoSpan, ToolCallID: NoSpan, ToolCalls: NoSpan}
	start := i
	if b[i] != '{' {
		return m, 0, ErrBadJSON
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return m, i + 1, nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return m, 0, ErrBadJSON
		}
		ke, err := skipString(b, i)
		if err != nil {
			return m, 0, err
		}
		key := b[i+1 : ke-1]
		i = skipSpace(b, ke)
		if i >= len(b) || b[i] != ':' {
			return m, 0, ErrBadJSON
		}
		i = skipSpace(b, i+1)
		ve, err := skipValue(b, i)
		if err != nil {
			return m, 0, err
		}
		v := providers.Span{Start: i - start, End: ve - start}
		switch string(key) {
		case "role":
			m.Role = role(b[i:ve])
		case "tool_call_id":
			m.ToolCallID = v
		case "content":
			m.Content = v
		case "tool_calls":
			m.ToolCalls = v
		}
		i = skipSpace(b, ve)
		if i >= len(b) {
			return m, 0, ErrBadJSON
		}
		if b[i] == '}' {
			return m, i + 1, nil
		}
		if b[i] != ',' {
			return m, 0, ErrBadJSON
		}
		i = skipSpace(b, i+1)
	}
	return m, 0, ErrBadJSON
}

// role decodes a role value without allocating for the common roles.
func role(v []byte) string {
	switch string(v) {
	case `"system"`:
		return "system"
	case `"developer"`:
		return "developer"
	case `"user"`:
		return "user"
	case `"assistant"`:
		return "assistant"
	case `"tool"`:
		return "tool"
	}
	return stringValue(v)
}

func stringValue(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	b, ok := DecodeString(v, nil)
	if !ok {
		return ""
	}
	return string(b)
}

// StringView returns the decoded value of the JSON string v, or "" when v is not a
// well-formed string. Without escapes the result aliases v (see Unsafe); otherwise it is a
// copy.
func StringView(v []byte) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && bytes.IndexByte(v, '\\') < 0 {
		return Unsafe(v[1 : len(v)-1])
	}
	return stringValue(v)
}

// EachKey calls fn with every key (raw, without quotes and unescaped only when it has no
// escapes) and value span of the JSON object obj. Keys with escapes are passed raw.
func EachKey(obj []byte, fn func(key []byte, v providers.Span) bool) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return ErrBadJSON
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for i < len(obj) {
		if obj[i] != '"' {
			return ErrBadJSON
		}
		ke, err := skipString(obj, i)
		if err != nil {
			return err
		}
		key := obj[i+1 : ke-1]
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return ErrBadJSON
		}
		i = skipSpace(obj, i+1)
		ve, err := skipValue(obj, i)
		if err != nil {
			return err
		}
		if !fn(key, providers.Span{Start: i, End: ve}) {
			return nil
		}
		i = skipSpace(obj, ve)
		if i >= len(obj) {
			return ErrBadJSON
		}
		if obj[i] == '}' {
			return nil
		}
		if obj[i] != ',' {
			return ErrBadJSON
		}
		i = skipSpace(obj, i+1)
	}
	return ErrBadJSON
}

// EachElement calls fn with the span of each element of the JSON array arr.
func EachElement(arr []byte, fn func(v providers.Span) bool) error {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return ErrBadJSON
	}
	i = skipSpace(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for i < len(arr) {
		end, err := skipValue(arr, i)
		if err != nil {
			return err
		}
		if !fn(providers.Span{Start: i, End: end}) {
			return nil
		}
		i = skipSpace(arr, end)
		if i >= len(arr) {
			return ErrBadJSON
		}
		if arr[i] == ']' {
			return nil
		}
		if arr[i] != ',' {
			return ErrBadJSON
		}
		i = skipSpace(arr, i+1)
	}
	return ErrBadJSON
}

// Field returns the span of key's value in obj, or NoSpan.
func Field(obj []byte, key string) providers.Span {
	out := NoSpan
	_ = EachKey(obj, func(k []byte, v providers.Span) bool {
		if string(k) == key {
			out = v
		}
		return true
	})
	return out
}

// StringField returns the decoded string value of key in obj, or "".
func StringField(obj []byte, key string) string {
	s := Field(obj, key)
	if s.Start < 0 {
		return ""
	}
	return stringValue(obj[s.Start:s.End])
}

// Unsafe views b as a string without copying; the caller must not keep the string past b's
// lifetime or mutate b while it is in use.
func Unsafe(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// DecodeString appends the decoded value of the quoted JSON string q to dst. ok is false when q
// is not a well-formed string.
func DecodeString(q []byte, dst []byte) ([]byte, bool) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return dst, false
	}
	s := q[1 : len(q)-1]
	dst = slices.Grow(dst, len(s)) // the text is never longer than its encoding
	for i := 0; i < len(s); {
		// Copy the run up to the next escape in one go.
		j := bytes.IndexByte(s[i:], '\\')
		if j < 0 {
			dst = append(dst, s[i:]...)
			break
		}
		j += i
		dst = append(dst, s[i:j]...)
		if j+1 >= len(s) {
			return dst, false
		}
		switch c := s[j+1]; c {
		case '"', '\\', '/':
			dst = append(dst, c)
			i = j + 2
		case 'b':
			dst = append(dst, '\b')
			i = j + 2
		case 'f':
			dst = append(dst, '\f')
			i = j + 2
		case 'n':
			dst = append(dst, '\n')
			i = j + 2
		case 'r':
			dst = append(dst, '\r')
			i = j + 2
		case 't':
			dst = append(dst, '\t')
			i = j + 2
		case 'u':
			r, ok := hex4(s, j+2)
			if !ok {
				return dst, false
			}
			i = j + 6
			if r >= 0xD800 && r < 0xDC00 {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if r2, ok := hex4(s, i+2); ok && r2 >= 0xDC00 && r2 < 0xE000 {
						r = (r-0xD800)<<10 | (r2 - 0xDC00) + 0x10000
						i += 6
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			} else if r >= 0xDC00 && r < 0xE000 {
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, false
		}
	}
	return dst, true
}

func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a quoted JSON string, escaping like encoding/json without HTML
// escaping; invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Splice returns body with the messages array at arr rebuilt: element i is replaced by
// repl[i] when present; all other bytes are kept.
func Splice(body []byte, arr providers.Span, msgs []Message, repl map[int][]byte) []byte {
	if len(repl) == 0 {
		return body
	}
	a := body[arr.Start:arr.End]
	grow := 0
	for i, r := range repl {
		grow += len(r) - len(msgs[i].Raw)
	}
	out := make([]byte, 0, len(body)+grow)
	out = append(out, body[:arr.Start]...)
	prev := 0
	for i := range msgs {
		r, ok := repl[i]
		if !ok {
			continue
		}
		out = append(out, a[prev:msgs[i].Pos.Start]...)
		out = append(out, r...)
		prev = msgs[i].Pos.End
	}
	out = append(out, a[prev:]...)
	return append(out, body[arr.End:]...)
}

// The scanners are the providers package's (one implementation for the whole gateway); a
// malformed body maps to this package's error.
func skipSpace(b []byte, i int) int { return providers.SkipSpace(b, i) }

func skipString(b []byte, i int) (int, error) {
	e, err := providers.SkipString(b, i)
	if err != nil {
		return 0, ErrBadJSON
	}
	return e, nil
}

func skipValue(b []byte, i int) (int, error) {
	e, err := providers.SkipValue(b, i)
	if err != nil {
		return 0, ErrBadJSON
	}
	return e, nil
}
