package compress

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The golden file pins Compress's output bytes and Report for a wide set of bodies and options,
// so that performance work cannot change behaviour. Regenerate it (only for an intended change)
// with: go test ./tokenopt/compress -run TestGoldenOutputs -update
var update = flag.Bool("update", false, "rewrite testdata/golden.txt from the current implementation")

const goldenFile = "testdata/golden.txt"

type goldenOpts struct {
	name string
	o    Options
}

// countWords and countRunes stand in for a custom Options.Count (a real tokenizer): they are
// not ceil(bytes/4), so Compress must measure the decoded text exactly.
func countWords(s string) int { return len(strings.Fields(s)) + 1 }
func countRunes(s string) int { return (utf8.RuneCountInString(s) + 2) / 3 }

func goldenOptions() []goldenOpts {
	return []goldenOpts{
		{"zero", Options{}},
		{"gateway", gatewayDefault},
		{"gatewayMask", Options{KeepToolOutputs: 4, ContextWindow: 200000}},
		{"bench", Options{EpochMessages: 4, KeepTurns: 1}},
		{"force", Options{ForceMask: true, EpochMessages: 4, KeepTurns: 1}},
		{"forceKeep3", Options{ForceMask: true, KeepToolOutputs: 3}},
		{"window8k", Options{ContextWindow: 8000, OutputTokens: 1000}},
		{"window3k", Options{ContextWindow: 3000, EpochMessages: 2}},
		{"trimOnly", Options{ContextWindow: 20000, OutputTokens: 2000, DisableMask: true, DisableTruncate: true}},
		{"noTrim", Options{ContextWindow: 3000, DisableTrim: true, DisableMask: true}},
		{"tinyWindow", Options{ContextWindow: 100, DisableMask: true}},
		{"fuzzLike", Options{EpochMessages: 3, ForceMask: true, MaskMinTokens: 8, TruncateAboveTokens: 300, TruncateHeadTokens: 50, TruncateTailTokens: 50, ContextWindow: 2000}},
		{"smallTrunc", Options{DisableMask: true, KeepToolOutputs: 4, ContextWindow: 200000, TruncateAboveTokens: 500}},
		{"squeezedHeadTail", Options{TruncateAboveTokens: 100, TruncateHeadTokens: 80, TruncateTailTokens: 80, MaskMinTokens: 20, EpochMessages: 2, KeepTurns: 1}},
		{"noCache", Options{EpochMessages: 2, KeepTurns: 1, MaskMinTokens: 30, Economics: Economics{CacheReadMultiplier: 1, CacheWriteMultiplier: 1}}},
		// A tiny limit squeezes head and tail to one token each; the truncation marker then
		// makes small outputs bigger, big enough to mask.
		{"tinyTrunc", Options{TruncateAboveTokens: 1, MaskMinTokens: 20, ForceMask: true, EpochMessages: 2, KeepTurns: 1}},
		{"words", Options{Count: countWords, ForceMask: true, EpochMessages: 2, KeepTurns: 1, TruncateAboveTokens: 300, MaskMinTokens: 10}},
		{"wordsGateway", Options{Count: countWords, DisableMask: true, KeepToolOutputs: 4, ContextWindow: 200000}},
		{"runesWindow", Options{Count: countRunes, KeepToolOutputs: 2, ContextWindow: 4000, TruncateAboveTokens: 1000}},
	}
}

type goldenBody struct {
	name string
	body []byte
}

func goldenBodies(t testing.TB) []goldenBody {
	var out []goldenBody
	add := func(name string, b []byte) { out = append(out, goldenBody{name, b}) }

	// Hand-written bodies: shapes, escapes, unicode and malformed input.
	big := strings.Repeat("log line 0123456789\n", 100)
	mkCall := func(id, name string) string {
		return `{"role":"assistant","content":null,"tool_calls":[{"id":"` + id + `","type":"function","function":{"name":"` + name + `","arguments":"{}"}}]}`
	}
	tool := func(id, content string) string {
		return `{"role":"tool","tool_call_id":"` + id + `","content":` + content + `}`
	}
	conv := func(middle ...string) string {
		return `{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"first"},` +
			strings.Join(middle, ",") + `,{"role":"assistant","content":"ok"},{"role":"user","content":"second"},{"role":"assistant","content":"ok2"},{"role":"user","content":"third"}]}`
	}
	esc := `"a\"b\\c\/d\be\ff\ng\rh\ti \u00e9\u00E9 \ud83d\ude00 lone \ud800 x \udc00 y \ud800\u0041 ` + strings.Repeat(`w\n`, 700) + `"`
	parts := `[{"type":"text","text":` + jsonString(big) + `},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"second\npart \u00e9"},"bare",{"type":"text","text":1},{"text":"dup","text":"last"}]`
	hand := map[string]string{
		"golden":          conv(mkCall("c1", "get_logs"), tool("c1", jsonString(big))),
		"escapes":         conv(mkCall("c1", "get_logs"), tool("c1", esc)),
		"parts":           conv(mkCall("c1", "read_file"), tool("c1", parts)),
		"partsBadEscape":  conv(mkCall("c1", "read_file"), tool("c1", `[{"type":"text","text":`+jsonString(big)+`},{"type":"text","text":"bad \x escape `+strings.Repeat("z", 900)+`"}]`)),
		"partsMalformed":  conv(mkCall("c1", "read_file"), tool("c1", `[{"type":"text","text":`+jsonString(big)+`} {"x":1}]`)),
		"partsEmpty":      conv(mkCall("c1", "read_file"), tool("c1", `[]`)),
		"badEscape":       conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat("q", 3000)+` \x "`)),
		"shortUnicode":    conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat("q", 3000)+` \u12"`)),
		"rawUnicode":      conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat("héllo wörld 😀 \u2028 ", 200)+"\xff\xfe end"+`"`)),
		"nullContent":     conv(mkCall("c1", "get_logs"), tool("c1", `null`)),
		"numberContent":   conv(mkCall("c1", "get_logs"), tool("c1", `12345`)),
		"objectContent":   conv(mkCall("c1", "get_logs"), tool("c1", `{"text":`+jsonString(big)+`}`)),
		"tinyOutputs":     conv(mkCall("c1", "get_logs"), tool("c1", `"abcdefghijkl"`), mkCall("c2", "search"), tool("c2", `"ab\ncd"`), tool("c2", `[{"type":"text","text":"abcdefghijklmnop"}]`)),
		"emptyContent":    conv(mkCall("c1", "get_logs"), tool("c1", `""`)),
		"noContent":       conv(mkCall("c1", "get_logs"), `{"role":"tool","tool_call_id":"c1"}`),
		"alreadyMasked":   conv(mkCall("c1", "get_logs"), tool("c1", jsonString(MaskPrefix+"get_logs, 500 tokens, sha256:00000000] "+big))),
		"escapedIDs":      conv(mkCall(`c\u0031`, `get\u005flogs`), tool("c1", jsonString(big))),
		"escapedIDs2":     conv(mkCall("c1", "get_logs"), tool(`c\u0031`, jsonString(big))),
		"missingID":       conv(`{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"anon"}}]}`, `{"role":"tool","content":`+jsonString(big)+`}`),
		"dupIDs":          conv(mkCall("c1", "first"), mkCall("c1", "second"), tool("c1", jsonString(big)), tool("c1", jsonString(big+"x"))),
		"funcNotObject":   conv(`{"role":"assistant","tool_calls":[{"id":"c1","function":"get_logs"},5,{"id":"c2","function":{"name":5}}]}`, tool("c1", jsonString(big)), tool("c2", jsonString(big))),
		"callsNotArray":   conv(`{"role":"assistant","tool_calls":{"id":"c1"}}`, tool("c1", jsonString(big))),
		"roleVariants":    conv(mkCall("c1", "get_logs"), `{"role":"t\u006fol","tool_call_id":"c1","content":`+jsonString(big)+`}`, `{"role":"Tool","content":`+jsonString(big)+`}`, `{"role":"user","role":"tool","content":`+jsonString(big)+`}`, `{"role":5,"content":"x"}`, `{"r\u006fle":"tool","content":`+jsonString(big)+`}`),
		"spaces":          "{ \"model\" : \"m\" ,\n \"messages\" :\n [ \n { \"role\" : \"user\" , \"content\" : \"a\" } ,\n\t{\"role\":\"assistant\",\"tool_calls\":[ {\"id\":\"c1\",\"function\":{ \"name\" : \"f\" } } ] } , {\"role\":\"tool\" ,\"tool_call_id\" : \"c1\", \"content\" : " + jsonString(big) + " } , {\"role\":\"user\",\"content\":\"b\"} ] , \"max_tokens\" : 300 }  trailing",
		"dupMessages":     `{"messages":"x","messages":[{"role":"user","content":` + jsonString(big) + `},{"role":"user","content":"b"}]}`,
		"dupMessagesBad":  `{"messages":[{"role":"user","content":"a"}],"messages":[1]}`,
		"dupMessagesBad2": `{"messages":[{"role":"user","content":"a"}],"messages":{"a":1}}`,
		"dupMessagesOK":   `{"messages":[1,2],"messages":[{"role":"user","content":"a"}]}`,
		"escapedKey":      `{"mess\u0061ges":[{"role":"user","content":` + jsonString(big) + `}],"max_t\u006fkens":900}`,
		"maxTokens":       `{"max_tokens":5000,"max_completion_tokens":"x","messages":[{"role":"user","content":` + jsonString(big+big) + `},{"role":"user","content":"b"}],"max_tokens":-1,"max_tokens":700}`,
		"maxCompletion":   `{"max_tokens":5000,"messages":[{"role":"user","content":` + jsonString(big+big) + `},{"role":"user","content":"b"}],"max_completion_tokens":2500}`,
		"markerValid":     `{"messages":[{"role":"system","content":"s"},{"role":"system","content":"[gateway: 7 earlier messages were omitted to fit the context window]"},{"role":"user","content":` + jsonString(big) + `},{"role":"user","content":` + jsonString(big) + `},{"role":"user","content":"z"}]}`,
		"markerBad":       `{"messages":[{"role":"system","content":"[gateway: 0 earlier messages were omitted to fit the context window]"},{"role":"developer","content":"[gateway: x earlier messages were omitted to fit the context window]"},{"role":"user","content":"z"}]}`,
		"markerTwo":       `{"messages":[{"role":"system","content":"[gateway: 3 earlier messages were omitted to fit the context window]"},{"role":"developer","content":"[gateway: 5 earlier messages were omitted to fit the context window]"},{"role":"user","content":` + jsonString(big) + `},{"role":"user","content":"z"}]}`,
		"emptyMessages":   `{"messages":[]}`,
		"emptyMessagesWS": `{"messages":[ ] , "x" : 1}`,
		"elementNotObj":   `{"messages":[{"role":"user","content":"a"},"b"]}`,
		"mismatched":      `{"messages":[{"role":"user","content":"a"]]}`,
		"mismatched2":     `{"messages":[{]},{"role":"user"}]}`,
		"badAfter":        `{"messages":[{"role":"user","content":"a"}],"x":}`,
		"badAfter2":       `{"messages":[{"role":"user","content":"a"}] "x":1}`,
		"unterminated":    `{"messages":[{"role":"user","content":"a`,
		"noClose":         `{"messages":[{"role":"user","content":"a"}]`,
		"trailingComma":   `{"messages":[{"role":"user","content":"a"},]}`,
		"msgTrailing":     `{"messages":[{"role":"user","content":"a",}]}`,
		"keyNotString":    `{"messages":[{role:"user"}]}`,
		"scalarEnd":       `{"messages":[{"role":"user","content":"a","n":12}],"t":true}`,
		"notObject":       `[{"messages":[]}]`,
		"empty":           ``,
		"emptyObject":     `{ }`,
		"badTop":          `{"model":"x" "messages":[]}`,
		"fuzzSeed2":       `{"messages":[{"role":"tool","tool_call_id":"a","content":"` + strings.Repeat("ab\\n", 400) + `"}]}`,
		"fuzzSeed3":       `{"messages":[{"role":"system","content":"[gateway: 3 earlier messages were omitted to fit the context window]"},{"role":"user","content":"x"}]}`,
		"badBody6":        `{"messages":[{"role":"tool","content":"\u00"}]}`,
	}
	// Raw sizes straddle the default truncation limit (8192 tokens = 32768 bytes) while the
	// decoded text does or does not: escapes make the raw string longer than its text.
	for _, n := range []int{32760, 32768, 32769, 32772, 40000} {
		hand[fmt.Sprintf("plain%d", n)] = conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat("x", n)+`"`))
		hand[fmt.Sprintf("escaped%d", n)] = conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat(`\n`, n/2)+`"`))
		hand[fmt.Sprintf("unicode%d", n)] = conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat(`\u00e9`, n/6)+`"`))
		hand[fmt.Sprintf("parts%d", n)] = conv(mkCall("c1", "get_logs"), tool("c1", `[{"type":"text","text":"`+strings.Repeat("y", n/2)+`"},{"type":"text","text":"`+strings.Repeat(`\t`, n/4)+`"}]`))
	}
	// Around MaskMinTokens (256 tokens = 1024 bytes).
	for _, n := range []int{1019, 1020, 1021, 1024, 1025, 1030} {
		hand[fmt.Sprintf("mask%d", n)] = conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat("m", n-12)+`\n\n\n\n\n\n"`))
	}
	for n := 1016; n <= 1026; n++ {
		hand[fmt.Sprintf("maskPlain%d", n)] = conv(mkCall("c1", "get_logs"), tool("c1", `"`+strings.Repeat("p", n)+`"`))
	}
	for _, name := range slices.Sorted(maps.Keys(hand)) {
		add("hand/"+name, []byte(hand[name]))
	}

	// Generated conversations, the benchmark bodies and the existing tests' bodies.
	for seed := uint64(0); seed < 24; seed++ {
		add(fmt.Sprintf("conv/%d", seed), encode(t, genConversation(seed, 2+int(seed%11))))
	}
	for _, n := range []int{1000, 10000, 100000, 250000} {
		add(fmt.Sprintf("bench/%d", n), benchBody(t, n))
	}
	add("agent/100000", agentBody(t, 100000))
	var sb strings.Builder
	for i := 0; sb.Len() < 100000; i++ {
		fmt.Fprintf(&sb, "line %06d of the build log\n", i)
	}
	add("truncateNewest", encode(t, []msg{
		{Role: "user", Content: "build"},
		{Role: "assistant", ToolCalls: []call{{ID: "c", Type: "function"}}},
		{Role: "tool", ToolCallID: "c", Content: sb.String()},
	}))
	for seed := uint64(0); seed < 40; seed++ {
		add(fmt.Sprintf("rich/%d", seed), richConversation(t, seed))
	}
	return out
}

// richConversation is a seeded agent conversation with escapes, unicode, quotes, parts arrays,
// odd content values and big outputs near the truncation limit. Markers in the text become
// raw escapes json.Marshal would never write (lone surrogates, uppercase hex, \/).
func richConversation(t testing.TB, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 11))
	words := []string{"error", "line", `"quoted"`, `back\slash`, "tab\there", "é", "日本語", "😀", "\u2028", "\x01", "<tag>&amp;", "\xff", "@LS@", "@UP@", "@SL@", "ok", "\n", "path/to/file", "42"}
	text := func(n int) string {
		var b strings.Builder
		for b.Len() < n {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
		return b.String()
	}
	content := func(n int) any {
		switch r.IntN(10) {
		case 0, 1:
			var ps []any
			for range 1 + r.IntN(3) {
				if r.IntN(4) == 0 {
					ps = append(ps, map[string]any{"type": "image_url", "image_url": map[string]any{"url": "u"}})
				} else {
					ps = append(ps, map[string]any{"type": "text", "text": text(n / 2)})
				}
			}
			return ps
		case 2:
			if r.IntN(2) == 0 {
				return nil
			}
			return map[string]any{"text": text(20)}
		}
		return text(n)
	}
	ms := []msg{{Role: "system", Content: text(300)}}
	if r.IntN(3) == 0 {
		ms = append(ms, msg{Role: "developer", Content: "dev " + text(50)})
	}
	id := 0
	for turn := range 2 + r.IntN(10) {
		ms = append(ms, msg{Role: "user", Content: fmt.Sprintf("turn %d %s", turn, text(60))})
		for range r.IntN(4) {
			a := msg{Role: "assistant"}
			for range 1 + r.IntN(3) {
				c := call{ID: fmt.Sprintf("call_@E@%d", id), Type: "function"}
				c.Function.Name = []string{"get_logs", "read_file", "search", "sp@E@cial"}[r.IntN(4)]
				id++
				a.ToolCalls = append(a.ToolCalls, c)
			}
			ms = append(ms, a)
			for _, c := range a.ToolCalls {
				size := 100 + r.IntN(3000)
				switch r.IntN(6) {
				case 0:
					size = 25000 + r.IntN(20000)
				case 1:
					size = 800 + r.IntN(500)
				}
				ms = append(ms, msg{Role: "tool", ToolCallID: c.ID, Content: content(size)})
			}
		}
		ms = append(ms, msg{Role: "assistant", Content: text(80)})
	}
	b := encode(t, ms)
	b = bytes.ReplaceAll(b, []byte("@LS@"), []byte(`\ud800`))
	b = bytes.ReplaceAll(b, []byte("@UP@"), []byte(`\u00C9`))
	b = bytes.ReplaceAll(b, []byte("@SL@"), []byte(`\/`))
	b = bytes.ReplaceAll(b, []byte("@E@"), []byte(`\u005f`))
	return b
}

func shortHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:6])
}

// goldenLine describes one call: the output's hash and length, whether body itself was
// returned, the error and the Report.
func goldenLine(name, opt string, body []byte, o Options) string {
	out, rep, err := Compress(body, o)
	same := len(out) == len(body) && (len(out) == 0 || &out[0] == &body[0])
	return fmt.Sprintf("%s %s out=%s len=%d same=%t err=%v rep=%v", name, opt, shortHash(out), len(out), same, err, rep)
}

func TestGoldenOutputs(t *testing.T) {
	var lines []string
	for _, b := range goldenBodies(t) {
		// The input's hash tells a changed test body from a changed output.
		lines = append(lines, fmt.Sprintf("%s - in=%s", b.name, shortHash(b.body)))
		for _, o := range goldenOptions() {
			lines = append(lines, goldenLine(b.name, o.name, b.body, o.o))
		}
	}
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		want[goldenKey(sc.Text())] = sc.Text()
	}
	if len(want) != len(lines) {
		t.Errorf("golden file has %d cases, the test %d", len(want), len(lines))
	}
	for _, l := range lines {
		if w := want[goldenKey(l)]; w != l {
			t.Errorf("\ngot  %s\nwant %s", l, w)
		}
	}
}

// goldenKey is a line's body and options names.
func goldenKey(line string) string {
	f := strings.SplitN(line, " ", 3)
	return f[0] + " " + f[1]
}
