package simulated

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// result is what the simulated model "generated".
type result struct {
	content    []byte // text or JSON; nil with tool calls
	toolCalls  []genCall
	finish     string
	completion int // completion tokens
}

type genCall struct {
	id   string
	name string
	args []byte
}

var (
	sentSubjects = [...]string{"The gateway", "This simulation", "The upstream", "A careful router", "The cache", "Every token", "The ledger", "The model"}
	sentVerbs    = [...]string{"answers", "measures", "routes", "remembers", "streams", "prices", "checks", "summarizes"}
	sentObjects  = [...]string{"each request deterministically", "your prompt with care", "the same bytes every time", "tokens without surprises", "prefixes in 128-token steps", "chunks as they arrive", "costs in micro-dollars", "the conversation so far"}
)

// appendSentence appends a deterministic sentence chosen by h.
func appendSentence(dst []byte, h uint64) []byte {
	dst = append(dst, sentSubjects[h&7]...)
	dst = append(dst, ' ')
	dst = append(dst, sentVerbs[(h>>8)&7]...)
	dst = append(dst, ' ')
	dst = append(dst, sentObjects[(h>>16)&7]...)
	return append(dst, '.')
}

const (
	echoMaxWords = 12
	echoMaxBytes = 96
)

// appendAnswer appends "Simulated answer: <first words of text>. <sentence>".
func appendAnswer(dst, text, scratch []byte, h uint64) []byte {
	dst = append(dst, "Simulated answer: "...)
	text = stripDirectives(text, scratch)
	start := len(dst)
	words := 0
	for len(text) > 0 && words < echoMaxWords {
		// Skip whitespace.
		i := 0
		for i < len(text) && isSpace(text[i]) {
			i++
		}
		text = text[i:]
		j := 0
		for j < len(text) && !isSpace(text[j]) {
			j++
		}
		if j == 0 {
			break
		}
		w := text[:j]
		text = text[j:]
		if len(dst)-start+len(w)+1 > echoMaxBytes {
			break
		}
		if words > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, w...)
		words++
	}
	if words == 0 {
		dst = append(dst, "your message"...)
	}
	dst = bytes.TrimRight(dst, ".!?,;:")
	dst = append(dst, ". "...)
	return appendSentence(dst, h)
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// appendToolAnswer appends a text answer about a tool result.
func appendToolAnswer(dst, toolResult []byte, h uint64) []byte {
	dst = append(dst, "Simulated answer: the tool returned "...)
	r := truncRunes(toolResult, 40)
	dst = append(dst, r...)
	dst = append(dst, ". "...)
	return appendSentence(dst, h)
}

// truncRunes cuts b to at most n bytes without splitting a UTF-8 sequence.
func truncRunes(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

func tokensOf(n int) int { return max((n+3)/4, 1) }

// maxSchemaDepth bounds recursive ($ref) schemas.
const maxSchemaDepth = 12

// genSchema appends a JSON value that satisfies schema: required object properties are
// filled by type (string "sample", number/integer 1 within bounds, boolean true, array [] or
// minItems items, object recursively), enum and const take their first value, anyOf/oneOf
// their first non-null branch, and $ref is resolved against root.
func genSchema(dst []byte, schema, root any, depth int) []byte {
	m, ok := schema.(map[string]any)
	if !ok || depth > maxSchemaDepth {
		if b, ok := schema.(bool); ok && !b {
			return append(dst, "null"...)
		}
		if depth > maxSchemaDepth {
			return append(dst, "null"...)
		}
		return append(dst, `"sample"`...)
	}
	if ref, ok := m["$ref"].(string); ok {
		if target := resolveRef(root, ref); target != nil {
			return genSchema(dst, target, root, depth+1)
		}
	}
	if c, ok := m["const"]; ok {
		b, _ := json.Marshal(c)
		return append(dst, b...)
	}
	if e, ok := m["enum"].([]any); ok && len(e) > 0 {
		b, _ := json.Marshal(e[0])
		return append(dst, b...)
	}
	for _, k := range [...]string{"anyOf", "oneOf", "allOf"} {
		if alts, ok := m[k].([]any); ok && len(alts) > 0 {
			pick := alts[0]
			for _, a := range alts {
				if am, ok := a.(map[string]any); !ok || am["type"] != "null" {
					pick = a
					break
				}
			}
			return genSchema(dst, pick, root, depth+1)
		}
	}
	typ := ""
	switch t := m["type"].(type) {
	case string:
		typ = t
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok && s != "null" {
				typ = s
				break
			}
		}
		if typ == "" {
			typ = "null"
		}
	}
	if typ == "" {
		switch {
		case m["properties"] != nil || m["required"] != nil:
			typ = "object"
		case m["items"] != nil:
			typ = "array"
		default:
			typ = "string"
		}
	}
	switch typ {
	case "object":
		props, _ := m["properties"].(map[string]any)
		req, _ := m["required"].([]any)
		dst = append(dst, '{')
		n := 0
		for _, r := range req {
			name, ok := r.(string)
			if !ok {
				continue
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = appendJSONString(dst, name)
			dst = append(dst, ':')
			dst = genSchema(dst, props[name], root, depth+1)
		}
		return append(dst, '}')
	case "array":
		k := 0
		if f, ok := m["minItems"].(float64); ok {
			k = min(int(f), 8)
		}
		dst = append(dst, '[')
		for i := range k {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = genSchema(dst, m["items"], root, depth+1)
		}
		return append(dst, ']')
	case "integer", "number":
		v := 1.0
		if f, ok := m["minimum"].(float64); ok && v < f {
			v = f
		}
		if f, ok := m["exclusiveMinimum"].(float64); ok && v <= f {
			v = f + 1
		}
		if f, ok := m["maximum"].(float64); ok && v > f {
			v = f
		}
		if f, ok := m["exclusiveMaximum"].(float64); ok && v >= f {
			v = f - 1
		}
		if typ == "integer" {
			v = math.Ceil(v)
		}
		return strconv.AppendFloat(dst, v, 'f', -1, 64)
	case "boolean":
		return append(dst, "true"...)
	case "null":
		return append(dst, "null"...)
	default:
		s := "sample"
		switch m["format"] {
		case "date-time":
			s = "2025-01-01T00:00:00Z"
		case "date":
			s = "2025-01-01"
		case "time":
			s = "00:00:00Z"
		case "email":
			s = "sample@example.com"
		case "uri", "url":
			s = "https://example.com/sample"
		case "uuid":
			s = "00000000-0000-4000-8000-000000000000"
		}
		if f, ok := m["minLength"].(float64); ok && len(s) < int(f) {
			s += strings.Repeat("x", int(f)-len(s))
		}
		return appendJSONString(dst, s)
	}
}

// resolveRef follows a local JSON pointer such as "#/$defs/Item".
func resolveRef(root any, ref string) any {
	p, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil
	}
	cur := root
	for _, tok := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	return cur
}

// schemaValue generates a value for a raw JSON schema, memoized by the schema bytes.
func (s *Server) schemaValue(raw []byte) []byte {
	if len(raw) == 0 || isNull(raw) {
		return []byte("{}")
	}
	key := fnvBytes(fnvOffset, raw)
	if v, ok := s.toolArgs.Load(key); ok {
		return v.([]byte)
	}
	var schema any
	if err := json.Unmarshal(raw, &schema); err != nil {
		return []byte("{}")
	}
	v := genSchema(nil, schema, schema, 0)
	if s.toolArgN.Add(1) <= 4096 {
		s.toolArgs.Store(key, v)
	}
	return v
}

// containsWord reports whether text contains word (ASCII case-insensitive) as a whole word.
func containsWord(text []byte, word string) bool {
	for i := 0; i+len(word) <= len(text); i++ {
		if !strings.EqualFold(string(text[i:i+len(word)]), word) {
			continue
		}
		if (i == 0 || !isWordByte(text[i-1])) && (i+len(word) == len(text) || !isWordByte(text[i+len(word)])) {
			return true
		}
	}
	return false
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// generate builds the answer for a parsed request.
func (s *Server) generate(p *parsed, d *directives, st *reqState, idHash uint64) result {
	var res result
	userHash := mix64(fnvBytes(fnvOffset^uint64(s.opts.Seed)^p.draw, p.lastUser))
	// Tool calls.
	if len(p.tools) > 0 && p.toolChoice != "none" && p.lastRole == "user" && !d.hasAnswer {
		var picked []*wireTool
		for i := range p.tools {
			t := &p.tools[i]
			if t.Function == nil {
				continue
			}
			if p.namedTool != "" {
				if t.Function.Name == p.namedTool {
					picked = append(picked, t)
					break
				}
				continue
			}
			picked = append(picked, t)
		}
		if len(picked) > 0 {
			if len(picked) >= 2 && p.parallel && p.namedTool == "" && containsWord(p.lastUser, "parallel") {
				picked = picked[:2]
			} else {
				picked = picked[:1]
			}
			n := 0
			for i, t := range picked {
				args := s.schemaValue(t.Function.Parameters)
				var idb [21]byte
				id := appendHex(append(idb[:0], "call_"...), mix64(idHash+uint64(i)+1))
				res.toolCalls = append(res.toolCalls, genCall{id: string(id), name: t.Function.Name, args: args})
				n += len(t.Function.Name) + len(args)
			}
			res.finish = "tool_calls"
			res.completion = tokensOf(n)
			return res
		}
	}
	out := st.answer[:0]
	switch {
	case d.hasAnswer:
		out = append(out, d.answer...)
	case len(d.recall) > 0:
		prompt := p.prompt
		if prompt == nil {
			prompt = st.canon
		}
		out = appendRecall(out, prompt, d.recall)
	case p.format == "json_schema":
		out = append(out, s.schemaValue(p.schema)...)
	default:
		var text []byte
		if p.lastRole == "tool" {
			text = appendToolAnswer(st.out[:0], p.lastTool, mix64(fnvBytes(userHash, p.lastTool)))
		} else {
			text = appendAnswer(st.out[:0], p.lastUser, st.text[len(st.text):], userHash)
		}
		st.out = text
		if p.format == "json_object" {
			out = append(out, `{"answer":`...)
			out = appendJSONString(out, string(text))
			out = append(out, '}')
		} else {
			out = append(out, text...)
		}
	}
	if d.answerTokens > 0 {
		// A runaway answer: it goes on until it has said answerTokens tokens, or until the cap
		// (generated only that far).
		want := d.answerTokens * 4
		if p.outputCap > 0 {
			want = min(want, int(p.outputCap)*4+4)
		}
		for i := uint64(0); len(out) < want; i++ {
			out = appendSentence(append(out, ' '), mix64(userHash+i))
		}
		out = truncRunes(out, want)
	}
	res.finish = "stop"
	res.completion = tokensOf(len(out))
	if p.outputCap > 0 && int64(res.completion) > p.outputCap {
		out = truncRunes(out, int(p.outputCap)*4)
		res.completion = tokensOf(len(out))
		res.finish = "length"
	}
	st.answer = out
	res.content = out
	return res
}

// maxAnswerTokens bounds answer_tokens (a runaway answer is generated in memory).
const maxAnswerTokens = 200_000

// appendRecall answers a question about a fact the way a model reads its prompt: from the
// newest copy. It finds the last occurrence of phrase in the prompt outside "[sim:…]" blocks
// and answers "Simulated answer: <phrase> <the word after it>."; a phrase the prompt does
// not contain is answered "not found".
func appendRecall(dst, prompt, phrase []byte) []byte {
	dst = append(dst, "Simulated answer: "...)
	for end := len(prompt); ; {
		i := bytes.LastIndex(prompt[:end], phrase)
		if i < 0 {
			break
		}
		if open := bytes.LastIndex(prompt[:i], simOpen); open >= 0 && bytes.IndexByte(prompt[open:i], ']') < 0 {
			end = open // inside a directive: look before it
			continue
		}
		rest := prompt[i+len(phrase):]
		j := 0
		for j < len(rest) && isSpace(rest[j]) {
			j++
		}
		k := j
		for k < len(rest) && !isSpace(rest[k]) && rest[k] != '.' && rest[k] != ',' && rest[k] != '"' && rest[k] != '\\' {
			k++
		}
		dst = append(dst, phrase...)
		dst = append(dst, ' ')
		dst = append(dst, rest[j:k]...)
		return append(dst, '.')
	}
	dst = append(dst, phrase...)
	return append(dst, ": not found."...)
}
