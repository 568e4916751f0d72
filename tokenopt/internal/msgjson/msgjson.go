// Package msgjson holds the byte-level helpers the token optimizers share: it locates the
// messages of an OpenAI chat-completions body without decoding them, reads the few fields of a
// message the optimizers need, and decodes/encodes JSON strings quickly. Everything it does not
// return stays as the caller wrote it.
package msgjson

import (
	"errors"
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
	// Role and ToolCallID are decoded; Content is the span of the content value inside Raw, or
	// NoSpan; ToolCalls is the span of the tool_calls value inside Raw, or NoSpan.
	Role       string
	ToolCallID string
	Content    providers.Span
	ToolCalls  providers.Span
}

// ContentRaw returns the raw JSON of the content value, or nil.
func (m *Message) ContentRaw() []byte {
	if m.Content.Start < 0 {
		return nil
	}
	return m.Raw[m.Content.Start:m.Content.End]
}

// Parse finds the messages array of body and scans its elements. arr is the array's span in
// body. Elements that are not objects are an error.
func Parse(body []byte) (arr providers.Span, msgs []Message, err error) {
	s, ok, err := providers.FindTopLevel(body, "messages")
	if err != nil {
		return arr, nil, err
	}
	if !ok || s.End-s.Start < 2 || body[s.Start] != '[' {
		return arr, nil, ErrBadJSON
	}
	a := body[s.Start:s.End]
	// Count first-level elements cheaply to size the slice: one allocation.
	msgs = make([]Message, 0, 16)
	var perr error
	i := skipSpace(a, 1)
	if i < len(a) && a[i] == ']' {
		return s, msgs, nil
	}
	for i < len(a) {
		end, err := skipValue(a, i)
		if err != nil {
			return arr, nil, err
		}
		m := Message{Raw: a[i:end], Pos: providers.Span{Start: i, End: end}, Content: NoSpan, ToolCalls: NoSpan}
		if a[i] != '{' {
			return arr, nil, ErrBadJSON
		}
		perr = EachKey(m.Raw, func(key []byte, v providers.Span) bool {
			val := m.Raw[v.Start:v.End]
			switch string(key) {
			case "role":
				m.Role = stringValue(val)
			case "tool_call_id":
				m.ToolCallID = stringValue(val)
			case "content":
				m.Content = v
			case "tool_calls":
				m.ToolCalls = v
			}
			return true
		})
		if perr != nil {
			return arr, nil, perr
		}
		msgs = append(msgs, m)
		i = skipSpace(a, end)
		if i >= len(a) {
			return arr, nil, ErrBadJSON
		}
		if a[i] == ']' {
			return s, msgs, nil
		}
		if a[i] != ',' {
			return arr, nil, ErrBadJSON
		}
		i = skipSpace(a, i+1)
	}
	return arr, nil, ErrBadJSON
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
	for i := 0; i < len(s); {
		// Copy the run up to the next escape in one go.
		j := i
		for j < len(s) && s[j] != '\\' {
			j++
		}
		dst = append(dst, s[i:j]...)
		if j >= len(s) {
			break
		}
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
