package cacheplan

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"

	"github.com/badtheorylabs/btl-runtime/providers"
)

var errBadJSON = errors.New("cacheplan: malformed JSON")

// member is one "key": value pair of an object; key is the quoted key as written.
type member struct {
	key, val []byte
	name     string
}

// members splits the object obj into its members, in order.
func members(obj []byte) ([]member, error) {
	i := skipSpace(obj, 1)
	var out []member
	if i < len(obj) && obj[i] == '}' {
		return out, nil
	}
	for i < len(obj) {
		if obj[i] != '"' {
			return nil, errBadJSON
		}
		ke, err := skipString(obj, i)
		if err != nil {
			return nil, err
		}
		m := member{key: obj[i:ke]}
		m.name = unquote(m.key)
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return nil, errBadJSON
		}
		i = skipSpace(obj, i+1)
		ve, err := skipValue(obj, i)
		if err != nil {
			return nil, err
		}
		m.val = obj[i:ve]
		out = append(out, m)
		i = skipSpace(obj, ve)
		if i >= len(obj) {
			return nil, errBadJSON
		}
		if obj[i] == '}' {
			return out, nil
		}
		if obj[i] != ',' {
			return nil, errBadJSON
		}
		i = skipSpace(obj, i+1)
	}
	return nil, errBadJSON
}

// elements splits the array arr into its elements.
func elements(arr []byte) ([][]byte, error) {
	i := skipSpace(arr, 1)
	var out [][]byte
	if i < len(arr) && arr[i] == ']' {
		return out, nil
	}
	for i < len(arr) {
		e, err := skipValue(arr, i)
		if err != nil {
			return nil, err
		}
		out = append(out, arr[i:e])
		i = skipSpace(arr, e)
		if i >= len(arr) {
			return nil, errBadJSON
		}
		if arr[i] == ']' {
			return out, nil
		}
		if arr[i] != ',' {
			return nil, errBadJSON
		}
		i = skipSpace(arr, i+1)
	}
	return nil, errBadJSON
}

func unquote(q []byte) string {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner)
	}
	var s string
	if json.Unmarshal(q, &s) != nil {
		return string(inner)
	}
	return s
}

// canonical returns v with the keys of every object sorted (recursively), and whether
// anything changed. Values already in canonical order come back as the same bytes; a
// rebuilt object or array is written without insignificant whitespace.
func canonical(v []byte) ([]byte, bool, error) {
	if len(v) == 0 {
		return v, false, nil
	}
	switch v[0] {
	case '{':
		ms, err := members(v)
		if err != nil {
			return nil, false, err
		}
		changed := false
		for i := range ms {
			nv, c, err := canonical(ms[i].val)
			if err != nil {
				return nil, false, err
			}
			if c {
				ms[i].val, changed = nv, true
			}
		}
		if !sort.SliceIsSorted(ms, func(i, j int) bool { return ms[i].name < ms[j].name }) {
			sort.SliceStable(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
			changed = true
		}
		if !changed {
			return v, false, nil
		}
		out := make([]byte, 0, len(v))
		out = append(out, '{')
		for i, m := range ms {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, m.key...)
			out = append(out, ':')
			out = append(out, m.val...)
		}
		return append(out, '}'), true, nil
	case '[':
		es, err := elements(v)
		if err != nil {
			return nil, false, err
		}
		changed := false
		for i := range es {
			nv, c, err := canonical(es[i])
			if err != nil {
				return nil, false, err
			}
			if c {
				es[i], changed = nv, true
			}
		}
		if !changed {
			return v, false, nil
		}
		out := make([]byte, 0, len(v))
		out = append(out, '[')
		for i, e := range es {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, e...)
		}
		return append(out, ']'), true, nil
	}
	return v, false, nil
}

// edit replaces body[start:end] with repl.
type edit struct {
	start, end int
	repl       []byte
}

// apply performs non-overlapping edits (sorted by start) on body into a new slice.
func apply(body []byte, edits []edit) []byte {
	if len(edits) == 0 {
		return body
	}
	sort.Slice(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	n := len(body)
	for _, e := range edits {
		n += len(e.repl) - (e.end - e.start)
	}
	out := make([]byte, 0, n)
	at := 0
	for _, e := range edits {
		out = append(out, body[at:e.start]...)
		out = append(out, e.repl...)
		at = e.end
	}
	return append(out, body[at:]...)
}

// offset is the position of sub (a subslice of base) inside base.
func offset(base, sub []byte) int { return cap(base) - cap(sub) }

// find returns the value of key in object obj (last occurrence wins), or nil.
func find(obj []byte, key string) []byte {
	ms, err := members(obj)
	if err != nil {
		return nil
	}
	var v []byte
	for _, m := range ms {
		if m.name == key {
			v = m.val
		}
	}
	return v
}

// The scanners are the providers package's (one implementation for the whole gateway); a
// malformed body maps to this package's error.
func skipSpace(b []byte, i int) int { return providers.SkipSpace(b, i) }

func skipString(b []byte, i int) (int, error) {
	e, err := providers.SkipString(b, i)
	if err != nil {
		return 0, errBadJSON
	}
	return e, nil
}

func skipValue(b []byte, i int) (int, error) {
	e, err := providers.SkipValue(b, i)
	if err != nil {
		return 0, errBadJSON
	}
	return e, nil
}
