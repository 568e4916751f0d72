package providers

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// ChunkTextBytes is how many bytes of text a chat.completion.chunk payload delivers: the
// decoded length of every choice's delta content, reasoning (reasoning_content, reasoning),
// refusal, and tool-call names and arguments. This is what a stream cut before its usage
// arrived is billed by: the JSON envelope around the text is not output, and counting it
// over-bills small deltas several times and under-bills large ones. It does not allocate.
func ChunkTextBytes(chunk []byte) int64 {
	// Every delta is a "delta" key of a choice. A structural "delta": (its quotes not
	// escaped) can only be a key, since inside a string a quote is escaped, so finding it
	// takes one vectorised search instead of walking the choices array.
	var n int64
	for off := 0; ; {
		i := bytes.Index(chunk[off:], deltaKey)
		if i < 0 {
			return n
		}
		i += off
		off = i + len(deltaKey)
		if escaped(chunk, i) {
			continue
		}
		vs := SkipSpace(chunk, off)
		if vs >= len(chunk) || chunk[vs] != '{' {
			continue
		}
		// EachTopLevel stops at the object's closing brace, so the delta is walked once.
		delta := chunk[vs:]
		_ = EachTopLevel(delta, func(key []byte, v Span) bool {
			val := delta[v.Start:v.End]
			switch {
			case KeyEquals(key, "content"), KeyEquals(key, "reasoning_content"), KeyEquals(key, "reasoning"), KeyEquals(key, "refusal"):
				n += StringBytes(val)
			case KeyEquals(key, "tool_calls"):
				n += toolCallTextBytes(val)
			}
			return true
		})
	}
}

var deltaKey = []byte(`"delta":`)

// escaped reports whether the quote at b[i] is escaped: preceded by an odd run of
// backslashes.
func escaped(b []byte, i int) bool {
	k := 0
	for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
		k++
	}
	return k%2 == 1
}

// toolCallTextBytes counts the names and argument fragments of a delta's tool_calls.
func toolCallTextBytes(calls []byte) int64 {
	if len(calls) == 0 || calls[0] != '[' {
		return 0
	}
	var n int64
	_ = EachElement(calls, func(_ int, call []byte) bool {
		f, ok, err := FindTopLevel(call, "function")
		if err != nil || !ok || call[f.Start] != '{' {
			return true
		}
		fn := call[f.Start:f.End]
		_ = EachTopLevel(fn, func(key []byte, v Span) bool {
			if KeyEquals(key, "arguments") || KeyEquals(key, "name") {
				n += StringBytes(fn[v.Start:v.End])
			}
			return true
		})
		return true
	})
	return n
}

// StringBytes is the length in bytes of the UTF-8 text a JSON string literal decodes to
// (0 for anything that is not a string), computed without decoding it.
func StringBytes(quoted []byte) int64 {
	if len(quoted) < 2 || quoted[0] != '"' {
		return 0
	}
	s := quoted[1 : len(quoted)-1]
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			n++
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		if s[i] != 'u' {
			n++ // \n, \", \\ … each decode to one byte
			continue
		}
		r := hex4(s, i+1)
		i += 4
		if utf16.IsSurrogate(r) {
			if i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				if pair := utf16.DecodeRune(r, hex4(s, i+3)); pair != utf8.RuneError {
					n += int64(utf8.RuneLen(pair))
					i += 6
					continue
				}
			}
			r = utf8.RuneError
		}
		if l := utf8.RuneLen(r); l > 0 {
			n += int64(l)
		} else {
			n += 3 // invalid: decoded as U+FFFD
		}
	}
	return n
}

// hex4 reads four hex digits at s[i:]; a short or bad sequence reads as U+FFFD.
func hex4(s []byte, i int) rune {
	if i+4 > len(s) {
		return utf8.RuneError
	}
	var r rune
	for _, c := range s[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return utf8.RuneError
		}
		r = r<<4 | rune(c)
	}
	return r
}
