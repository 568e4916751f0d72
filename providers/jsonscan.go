package providers

import (
	"bytes"
	"encoding/json"
	"errors"
)

// The gateway forwards bodies as bytes and touches only the few top-level fields it owns
// (model, stream_options, usage). These helpers find and replace one top-level value without
// decoding the rest, so unknown fields pass both ways untouched and the hot path does not pay
// for a full decode and re-encode.

var errBadJSON = errors.New("malformed JSON")

// Span is a byte range [Start, End) of a JSON value inside a document.
type Span struct{ Start, End int }

// FindTopLevel returns the span of the value of key in the top-level JSON object of doc. As
// encoding/json does, the last occurrence of a duplicated key wins. doc must be an object.
func FindTopLevel(doc []byte, key string) (Span, bool, error) {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return Span{}, false, errBadJSON
	}
	i = skipSpace(doc, i+1)
	var found Span
	ok := false
	if i < len(doc) && doc[i] == '}' {
		return Span{}, false, nil
	}
	for i < len(doc) {
		if doc[i] != '"' {
			return Span{}, false, errBadJSON
		}
		ks := i
		ke, err := skipString(doc, i)
		if err != nil {
			return Span{}, false, err
		}
		match := KeyEquals(doc[ks:ke], key)
		i = skipSpace(doc, ke)
		if i >= len(doc) || doc[i] != ':' {
			return Span{}, false, errBadJSON
		}
		i = skipSpace(doc, i+1)
		vs := i
		ve, err := skipValue(doc, i)
		if err != nil {
			return Span{}, false, err
		}
		if match {
			found, ok = Span{vs, ve}, true
		}
		i = skipSpace(doc, ve)
		if i >= len(doc) {
			return Span{}, false, errBadJSON
		}
		if doc[i] == '}' {
			return found, ok, nil
		}
		if doc[i] != ',' {
			return Span{}, false, errBadJSON
		}
		i = skipSpace(doc, i+1)
	}
	return Span{}, false, errBadJSON
}

// KeyEquals compares a quoted JSON key with key, decoding escapes only when there are any.
func KeyEquals(quoted []byte, key string) bool {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == key
	}
	var s string
	return json.Unmarshal(quoted, &s) == nil && s == key
}

// Replace returns doc with the span replaced by value, in a new slice.
func Replace(doc []byte, s Span, value []byte) []byte {
	out := make([]byte, 0, len(doc)-(s.End-s.Start)+len(value))
	out = append(out, doc[:s.Start]...)
	out = append(out, value...)
	return append(out, doc[s.End:]...)
}

// SetTopLevel replaces key's value, or inserts "key":value first in the object when absent.
func SetTopLevel(doc []byte, key string, value []byte) ([]byte, error) {
	s, ok, err := FindTopLevel(doc, key)
	if err != nil {
		return nil, err
	}
	if ok {
		return Replace(doc, s, value), nil
	}
	return InsertTopLevel(doc, key, value), nil
}

// InsertTopLevel inserts "key":value first in the object doc, which must not have key.
func InsertTopLevel(doc []byte, key string, value []byte) []byte {
	open := skipSpace(doc, 0)
	rest := skipSpace(doc, open+1)
	out := make([]byte, 0, len(doc)+len(key)+len(value)+4)
	out = append(out, doc[:open+1]...)
	out = append(out, '"')
	out = append(out, key...)
	out = append(out, '"', ':')
	out = append(out, value...)
	if doc[rest] != '}' {
		out = append(out, ',')
	}
	return append(out, doc[open+1:]...)
}

// AppendToObject inserts ,"key":value before the closing brace of the object at s.
func AppendToObject(doc []byte, s Span, key string, value []byte) []byte {
	end := s.End - 1 // the closing brace
	empty := len(bytes.TrimSpace(doc[s.Start+1:end])) == 0
	out := make([]byte, 0, len(doc)+len(key)+len(value)+4)
	out = append(out, doc[:end]...)
	if !empty {
		out = append(out, ',')
	}
	out = append(out, '"')
	out = append(out, key...)
	out = append(out, '"', ':')
	out = append(out, value...)
	return append(out, doc[end:]...)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'. It jumps from
// quote to quote with IndexByte (vectorised) and treats a quote as escaped when an odd run of
// backslashes precedes it.
func skipString(b []byte, i int) (int, error) {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, errBadJSON
		}
		q := i + j
		bs := 0
		for k := q - 1; k >= i && b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return q + 1, nil
		}
		i = q + 1
	}
}

// skipValue returns the index just past the value starting at b[i]. Scalars are only delimited,
// not validated: callers that need validity decode the value they extract.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errBadJSON
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e, err := skipString(b, i)
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
		return 0, errBadJSON
	default:
		start := i
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r', ':', '"', '{', '[':
				if i == start {
					return 0, errBadJSON
				}
				return i, nil
			}
			i++
		}
		if i == start {
			return 0, errBadJSON
		}
		return i, nil
	}
}

// HasObjectValue reports whether doc may carry key with an object value: a cheap scan for
// "key": followed by '{' that lets callers skip a full FindTopLevel on the common case where
// the key is absent or null. A false positive (the pattern inside a nested object) is fine:
// FindTopLevel decides.
func HasObjectValue(doc []byte, quotedKeyColon []byte) bool {
	for off := 0; ; {
		i := bytes.Index(doc[off:], quotedKeyColon)
		if i < 0 {
			return false
		}
		j := skipSpace(doc, off+i+len(quotedKeyColon))
		if j < len(doc) && doc[j] == '{' {
			return true
		}
		off += i + len(quotedKeyColon)
	}
}

var errRejected = errors.New("element rejected")

// EachElement calls fn with each element of a JSON array (already known to be valid JSON);
// it stops with an error when fn returns false.
func EachElement(arr []byte, fn func(i int, v []byte) bool) error {
	i := skipSpace(arr, 1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for n := 0; i < len(arr); n++ {
		end, err := skipValue(arr, i)
		if err != nil {
			return err
		}
		if !fn(n, arr[i:end]) {
			return errRejected
		}
		i = skipSpace(arr, end)
		if i >= len(arr) || arr[i] == ']' {
			return nil
		}
		i = skipSpace(arr, i+1) // the comma
	}
	return nil
}

// SkipSpace returns the index of the first non-whitespace byte at or after i.
func SkipSpace(b []byte, i int) int { return skipSpace(b, i) }

// SkipString returns the index just past the JSON string starting at b[i] == '"'.
func SkipString(b []byte, i int) (int, error) { return skipString(b, i) }

// SkipValue returns the index just past the JSON value starting at b[i]. Scalars are
// delimited, not validated.
func SkipValue(b []byte, i int) (int, error) { return skipValue(b, i) }

// EachTopLevel calls fn with every member of the top-level object of doc, a document already
// known to be valid JSON: the key raw (quoted, escapes kept) and the value's span. It stops
// when fn returns false.
func EachTopLevel(doc []byte, fn func(quotedKey []byte, v Span) bool) error {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return errBadJSON
	}
	i = skipSpace(doc, i+1)
	for i < len(doc) && doc[i] == '"' {
		ke, err := skipString(doc, i)
		if err != nil {
			return err
		}
		key := doc[i:ke]
		vs := skipSpace(doc, skipSpace(doc, ke)+1) // past the colon
		ve, err := skipValue(doc, vs)
		if err != nil {
			return err
		}
		if !fn(key, Span{vs, ve}) {
			return nil
		}
		i = skipSpace(doc, ve)
		if i < len(doc) && doc[i] == ',' {
			i = skipSpace(doc, i+1)
		}
	}
	return nil
}
