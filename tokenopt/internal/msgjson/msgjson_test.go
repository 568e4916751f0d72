package msgjson

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// refParse is the straightforward reading of a body that ParseAppend must match: find the
// messages array with providers.FindTopLevel, then walk its elements and their keys.
func refParse(body []byte) (providers.Span, []Message, bool) {
	s, ok, err := providers.FindTopLevel(body, "messages")
	if err != nil || !ok || body[s.Start] != '[' {
		return providers.Span{}, nil, false
	}
	a := body[s.Start:s.End]
	msgs := []Message{}
	good := true
	err = EachElement(a, func(v providers.Span) bool {
		m := Message{Raw: a[v.Start:v.End], Pos: v, Content: NoSpan, ToolCallID: NoSpan, ToolCalls: NoSpan}
		if m.Raw[0] != '{' {
			good = false
			return false
		}
		err := EachKey(m.Raw, func(key []byte, v providers.Span) bool {
			switch string(key) {
			case "role":
				m.Role = stringValue(m.Raw[v.Start:v.End])
			case "tool_call_id":
				m.ToolCallID = v
			case "content":
				m.Content = v
			case "tool_calls":
				m.ToolCalls = v
			}
			return true
		})
		if err != nil {
			good = false
			return false
		}
		msgs = append(msgs, m)
		return true
	})
	if err != nil || !good {
		return providers.Span{}, nil, false
	}
	return s, msgs, true
}

var extraKeys = []string{"max_tokens", "model"}

func checkParse(t *testing.T, body []byte) {
	t.Helper()
	spans := make([]providers.Span, len(extraKeys))
	arr, msgs, err := ParseAppend(make([]Message, 3), body, extraKeys, spans)
	rarr, rmsgs, ok := refParse(body)
	if ok != (err == nil) {
		t.Fatalf("%q: error %v, reference ok %v", body, err, ok)
	}
	if !ok {
		return
	}
	if arr != rarr || !reflect.DeepEqual(msgs, rmsgs) {
		t.Fatalf("%q:\ngot  %v %+v\nwant %v %+v", body, arr, msgs, rarr, rmsgs)
	}
	for k, key := range extraKeys {
		s, found, err := providers.FindTopLevel(body, key)
		if err != nil || !found {
			s = NoSpan
		}
		if spans[k] != s {
			t.Fatalf("%q: %s at %v, want %v", body, key, spans[k], s)
		}
	}
}

var parseSeeds = []string{
	`{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f"}}]},{"role":"tool","tool_call_id":"c","content":"out\n\"q\""}],"max_tokens":10}`,
	`{ "messages" : [ { "role" : "us\u0065r" , "r\u006fle":"x", "content" : "a" } , {} ] , "max_tokens":1,"max_t\u006fkens":2 }`,
	`{"messages":"x","messages":[{"role":"user","role":5}]}`,
	`{"messages":[{"role":"user"}],"messages":[1]}`,
	`{"messages":[1],"messages":[{"role":"tool"}]}`,
	`{"mess\u0061ges":[{"role":"developer"}]}`,
	`{"messages":[{"role":"user","content":"a"]]}`,
	`{"messages":[{]},{"role":"user"}]}`,
	`{"messages":[{"role":"user"},]}`,
	`{"messages":[{"role":"user",}]}`,
	`{"messages":[{"role":"user"}],}`,
	`{"messages":[{"role":"user"}] "x":1}`,
	`{"messages":[{"role":"user"}],"x":}`,
	`{"messages":[{"role":"user"}]`,
	`{"messages":[ ]}`,
	`{"messages":[]} trailing`,
	`{}`,
	`[]`,
	``,
}

func TestParseMatchesReference(t *testing.T) {
	for _, s := range parseSeeds {
		checkParse(t, []byte(s))
	}
	// Every prefix of a valid body is a malformed one.
	for i := range len(parseSeeds[0]) {
		checkParse(t, []byte(parseSeeds[0][:i]))
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkParse(t, body) })
}

func TestParseAllocs(t *testing.T) {
	body := []byte(`{"messages":[` + strings.Repeat(`{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"c1","content":"x"},`, 50) + `{"role":"assistant","content":"ok"}]}`)
	dst := make([]Message, 0, 128)
	if n := testing.AllocsPerRun(10, func() { _, _, _ = ParseAppend(dst, body, nil, nil) }); n != 0 {
		t.Fatalf("ParseAppend into a large enough slice allocates %v times", n)
	}
}

func TestStringView(t *testing.T) {
	for _, s := range []string{`"plain"`, `"es\ncaped \u00e9"`, `"bad \x"`, `5`, `"`, ``, `"unterminated`} {
		if got, want := StringView([]byte(s)), stringValue([]byte(s)); got != want {
			t.Errorf("StringView(%s) = %q, want %q", s, got, want)
		}
	}
}

// FuzzDecodeString checks DecodeString against encoding/json on the strings json accepts, and
// that AppendString round-trips through it.
func FuzzDecodeString(f *testing.F) {
	for _, s := range []string{`"plain"`, `"a\"b\\c\/d\be\ff\ng\rh\ti"`, `"\u00e9\u00E9 \ud83d\ude00 \ud800 \udc00 \ud800\u0041"`, `"bad \x"`, `"\u12"`, `"é😀"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, q []byte) {
		got, ok := DecodeString(q, []byte("prefix"))
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Fatalf("dst not kept: %q", got)
		}
		var want string
		quoted := len(q) >= 2 && q[0] == '"' && q[len(q)-1] == '"' // json also allows spaces around
		if quoted && json.Unmarshal(q, &want) == nil && utf8.Valid(q) {
			if !ok || string(got[len("prefix"):]) != want {
				t.Fatalf("DecodeString(%s) = %q, %v; json: %q", q, got, ok, want)
			}
		}
		if utf8.Valid(q) {
			back, ok := DecodeString(AppendString(nil, string(q)), nil)
			if !ok || !bytes.Equal(back, q) {
				t.Fatalf("round trip of %q gave %q", q, back)
			}
		}
	})
}
