package providers

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidJSONMatchesEncodingJSON(t *testing.T) {
	cases := []string{
		`{}`, `[]`, `""`, `0`, `-0`, `-0.5e+10`, `1E5`, `true`, `false`, `null`, ` {"a" : [1, 2.5, "x", {}, []] } `,
		`{"a":"\u00e9\n\t\"\\\/"}`, "\"\xff\xfe\"", `{"a":1,"a":2}`,
		``, ` `, `{`, `}`, `[`, `[1,]`, `{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{1:2}`, `01`, `1.`, `.5`, `-`, `1e`, `1e+`,
		`+1`, `tru`, `truex`, `nul`, `"abc`, `"\x"`, `"\u12"`, `"\u12g4"`, "\"a\x01\"", "\"\t\"", `{"a":1}x`, `1 2`,
		`[1 2]`, `{"a" 1}`, `"\`, `["a",]`, `NaN`, `[-]`, `{"a":[}]}`, `[{]`,
		`"0123456789abcdef0123456789abcdef\"0123"`, `"long string with no specials at all, more than eight bytes"`,
		"\"long string with a control \x1f after eight bytes\"",
		strings.Repeat("[", 9999) + strings.Repeat("]", 9999),
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
	}
	for _, c := range cases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.60q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

// FuzzValidJSON: the fast validator accepts exactly what encoding/json accepts.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{"model":"m","messages":[{"role":"user","content":"hi \"there\" \u00e9"}]}`,
		`[1,-2.5e3,true,false,null,{"a":[]}]`, `"\\\""`, `{"a":"b\/c"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	body := []byte(`{"model":"m","messages":[` + strings.Repeat(`{"role":"user","content":"Refunds are issued within 14 days of the request; see \"policy\" for details."},`, 4000) + `{"role":"user","content":"x"}]}`)
	b.SetBytes(int64(len(body)))
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			validJSON(body)
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		for b.Loop() {
			json.Valid(body)
		}
	})
}
