package cacheplan

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
)

var errBadJSON = errors.New("cacheplan: malformed JSON")

// objIter walks the members of an object in order without allocating. It accepts exactly
// what a split of the whole object would: next yields a member only once the separator after
// it was read, and after the last one err tells whether the object was malformed. The parts
// it yields are subslices of the object.
type objIter struct {
	b    []byte
	i    int // where the next member starts; once done, just past the closing brace
	done bool
	err  error
}

// objectIter starts a walk of obj (obj[0] is '{').
func objectIter(obj []byte) objIter { return objectAt(obj, 0) }

// objectAt starts a walk of the object at b[at] (a '{'). The bytes after the object do not
// matter: where the walk succeeds it ends where skipping the value would.
func objectAt(b []byte, at int) objIter {
	i := skipSpace(b, at+1)
	if i < len(b) && b[i] == '}' {
		return objIter{b: b, i: i + 1, done: true}
	}
	return objIter{b: b, i: i}
}

// next returns the next member's quoted key (as written) and value.
func (it *objIter) next() (key, val []byte, ok bool) {
	if key, _, ok = it.key(); !ok {
		return nil, nil, false
	}
	if val, ok = it.value(); !ok {
		return nil, nil, false
	}
	return key, val, true
}

// key reads the next member's key and the colon after it, and returns the key and the index
// of the value. The caller then reads the value with value, or delimits it itself and calls
// endValue.
func (it *objIter) key() (key []byte, at int, ok bool) {
	if it.done || it.err != nil {
		return nil, 0, false
	}
	b, ks := it.b, it.i
	if ks >= len(b) || b[ks] != '"' {
		it.err = errBadJSON
		return nil, 0, false
	}
	ke, err := skipString(b, ks)
	if err != nil {
		it.err = err
		return nil, 0, false
	}
	i := skipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		it.err = errBadJSON
		return nil, 0, false
	}
	it.i = skipSpace(b, i+1)
	return b[ks:ke], it.i, true
}

// value reads the value of the member whose key was just read.
func (it *objIter) value() ([]byte, bool) {
	i := it.i
	e, err := skipValue(it.b, i)
	if err != nil {
		it.err = err
		return nil, false
	}
	if !it.endValue(e) {
		return nil, false
	}
	return it.b[i:e], true
}

// endValue reads what follows a value that ends just before index e: a comma or the closing
// brace.
func (it *objIter) endValue(e int) bool {
	b := it.b
	i := skipSpace(b, e)
	switch {
	case i >= len(b):
		it.err = errBadJSON
	case b[i] == '}':
		it.done, it.i = true, i+1
	case b[i] == ',':
		it.i = skipSpace(b, i+1)
	default:
		it.err = errBadJSON
	}
	return it.err == nil
}

// arrIter walks the elements of an array the way objIter walks an object.
type arrIter struct {
	b    []byte
	i    int // where the next element starts; once done, just past the closing bracket
	done bool
	err  error
}

// arrayIter starts a walk of arr (arr[0] is '[').
func arrayIter(arr []byte) arrIter { return arrayAt(arr, 0) }

// arrayAt starts a walk of the array at b[at] (a '['), as objectAt.
func arrayAt(b []byte, at int) arrIter {
	i := skipSpace(b, at+1)
	if i < len(b) && b[i] == ']' {
		return arrIter{b: b, i: i + 1, done: true}
	}
	return arrIter{b: b, i: i}
}

func (it *arrIter) next() ([]byte, bool) {
	i, ok := it.start()
	if !ok {
		return nil, false
	}
	e, err := skipValue(it.b, i)
	if err != nil {
		it.err = err
		return nil, false
	}
	if !it.finish(e) {
		return nil, false
	}
	return it.b[i:e], true
}

// start returns the index of the next element in the array, for a caller that delimits
// the element itself and then calls finish; ok is false after the last one or on error.
func (it *arrIter) start() (i int, ok bool) {
	if it.done || it.err != nil {
		return 0, false
	}
	if it.i >= len(it.b) {
		it.err = errBadJSON
		return 0, false
	}
	return it.i, true
}

// finish reads the separator after the element that ends just before index e.
func (it *arrIter) finish(e int) bool {
	b := it.b
	j := skipSpace(b, e)
	switch {
	case j >= len(b):
		it.err = errBadJSON
	case b[j] == ']':
		it.done, it.i = true, j+1
	case b[j] == ',':
		it.i = skipSpace(b, j+1)
	default:
		it.err = errBadJSON
	}
	return it.err == nil
}

// countElements returns the number of elements of arr and the last one, or an error when
// arr is malformed.
func countElements(arr []byte) (n int, last []byte, err error) {
	n, last, _, err = walkArray(arr, 0)
	return n, last, err
}

// walkArray walks the array at b[at] (a '[') and returns its number of elements, the last
// one, and the index just past it: it delimits the array as it counts (see arrayAt).
func walkArray(b []byte, at int) (n int, last []byte, end int, err error) {
	it := arrayAt(b, at)
	for e, ok := it.next(); ok; e, ok = it.next() {
		n, last = n+1, e
	}
	if it.err != nil {
		return 0, nil, 0, it.err
	}
	return n, last, it.i, nil
}

// name is the decoded form of the JSON string q (quoted, as written). Only strings with
// escapes are decoded, and so allocate; the rest return a subslice of q.
func name(q []byte) []byte {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	return []byte(unquote(q))
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

// member is one "key": value pair of an object: the key as written, its decoded name and
// the value.
type member struct {
	key, name, val []byte
}

func byName(a, b member) int { return bytes.Compare(a.name, b.name) }

// canonical appends to dst the form of v with the keys of every object sorted (stably, by
// decoded name, recursively) and reports whether that differs from v. A rebuilt object or
// array is written without insignificant whitespace; a value already in canonical order is
// appended as it is. stack is scratch space for the members of the objects being rebuilt.
func canonical(dst, v []byte, stack *[]member) ([]byte, bool, error) {
	if len(v) == 0 {
		return dst, false, nil
	}
	start := len(dst)
	changed := false
	switch v[0] {
	case '{':
		base := len(*stack)
		defer func() { *stack = (*stack)[:base] }()
		it := objectIter(v)
		for k, x, ok := it.next(); ok; k, x, ok = it.next() {
			*stack = append(*stack, member{key: k, name: name(k), val: x})
		}
		if it.err != nil {
			return dst, false, it.err
		}
		if ms := (*stack)[base:]; !slices.IsSortedFunc(ms, byName) {
			slices.SortStableFunc(ms, byName)
			changed = true
		}
		dst = append(dst, '{')
		for i := base; i < len(*stack); i++ {
			m := (*stack)[i] // by index: the recursion may move the stack
			if i > base {
				dst = append(dst, ',')
			}
			dst = append(append(dst, m.key...), ':')
			var c bool
			var err error
			if dst, c, err = canonical(dst, m.val, stack); err != nil {
				return dst, false, err
			}
			changed = changed || c
		}
		dst = append(dst, '}')
	case '[':
		dst = append(dst, '[')
		it := arrayIter(v)
		for n := 0; ; n++ {
			e, ok := it.next()
			if !ok {
				break
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			var c bool
			var err error
			if dst, c, err = canonical(dst, e, stack); err != nil {
				return dst, false, err
			}
			changed = changed || c
		}
		if it.err != nil {
			return dst, false, it.err
		}
		dst = append(dst, ']')
	default:
		return append(dst, v...), false, nil
	}
	if !changed {
		return append(dst[:start], v...), false, nil
	}
	return dst, true, nil
}

// edit replaces body[Start:End] with Repl; the plan's edits are applied by conv.Apply in one
// copy, as the optimizer's other levers' are.
type edit = conv.Edit

// offset is the position of sub (a subslice of base) inside base.
func offset(base, sub []byte) int { return cap(base) - cap(sub) }

// find returns the value of key in object obj (last occurrence wins), or nil (also when obj
// is malformed).
func find(obj []byte, key string) []byte {
	var v []byte
	it := objectIter(obj)
	for k, x, ok := it.next(); ok; k, x, ok = it.next() {
		if string(name(k)) == key {
			v = x
		}
	}
	if it.err != nil {
		return nil
	}
	return v
}

// find2 is find for two keys in one walk.
func find2(obj []byte, key1, key2 string) (v1, v2 []byte) {
	it := objectIter(obj)
	for k, x, ok := it.next(); ok; k, x, ok = it.next() {
		switch string(name(k)) {
		case key1:
			v1 = x
		case key2:
			v2 = x
		}
	}
	if it.err != nil {
		return nil, nil
	}
	return v1, v2
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
