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
		match := keyEquals(doc[ks:ke], key)
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

// keyEquals compares a quoted JSON key with key, decoding escapes only when there are any.
func keyEquals(quoted []byte, key string) bool {
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
	return append(out, doc[open+1:]...), nil
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

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	i++
	for i < len(b) {
		j := bytes.IndexAny(b[i:], "\"\\")
		if j < 0 {
			return 0, errBadJSON
		}
		i += j
		if b[i] == '"' {
			return i + 1, nil
		}
		i += 2 // escape: skip the backslash and the escaped byte
	}
	return 0, errBadJSON
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
			case ',', '}', ']', ' ', '\t', '\n', '\r':
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
