package providers

import (
	"encoding/json"
	"testing"
)

// parseUsageReflect is the reference: what encoding/json makes of a usage object.
func parseUsageReflect(raw []byte) (Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return Usage{}, false
	}
	var o OpenAIUsage
	if err := json.Unmarshal(raw, &o); err != nil {
		return Usage{}, false
	}
	return o.Normal(), true
}

var usageSamples = []string{
	`{"prompt_tokens":20,"completion_tokens":24,"total_tokens":44,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0}}`,
	`{"prompt_tokens":20,"completion_tokens":24,"total_tokens":44}`,
	`{"prompt_tokens":100,"prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":40,"completion_tokens":5}`,
	`{"prompt_tokens":100,"prompt_tokens_details":{"cached_tokens":10,"cache_write_tokens":30},"completion_tokens":5,"cost":0.0012}`,
	`{"prompt_tokens":1,"prompt_tokens":2}`,
	`{"prompt_tokens_details":{"cached_tokens":5},"prompt_tokens_details":{"cache_write_tokens":7},"prompt_tokens":20}`,
	`{"prompt_tokens_details":{"cached_tokens":5},"prompt_tokens_details":null,"prompt_tokens":20}`,
	`{"Prompt_Tokens":30,"completion_tokens":1}`,
	`{"prompt_tok\u0065ns":30}`,
	`{"prompt_to\u212aens":30}`,
	`{"prompt_tokens":1.0}`,
	`{"prompt_tokens":1e2}`,
	`{"prompt_tokens":-3}`,
	`{"prompt_tokens":null,"completion_tokens":2}`,
	`{"prompt_tokens":"12"}`,
	`{"prompt_tokens":99999999999999999999}`,
	`{"prompt_tokens":12`,
	`{"prompt_tokens":12}}`,
	`{}`,
	`null`,
	``,
	` {"prompt_tokens":1}`,
	`{"completion_tokens_details":{"reasoning_tokens":7},"completion_tokens":9}`,
	`{"completion_tokens_details":[],"completion_tokens":9}`,
}

func TestParseOpenAIUsageMatchesEncodingJSON(t *testing.T) {
	for _, s := range usageSamples {
		got, gotOK := ParseOpenAIUsage([]byte(s))
		want, wantOK := parseUsageReflect([]byte(s))
		if got != want || gotOK != wantOK {
			t.Errorf("%s: got %+v %v, encoding/json %+v %v", s, got, gotOK, want, wantOK)
		}
	}
	// The usual shape takes the scanner, not the fallback.
	var o OpenAIUsage
	if !scanOpenAIUsage([]byte(usageSamples[0]), &o) {
		t.Fatal("the usual usage object fell back to encoding/json")
	}
}

func FuzzParseOpenAIUsage(f *testing.F) {
	for _, s := range usageSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, gotOK := ParseOpenAIUsage(raw)
		want, wantOK := parseUsageReflect(raw)
		if got != want || gotOK != wantOK {
			t.Fatalf("%q: got %+v %v, encoding/json %+v %v", raw, got, gotOK, want, wantOK)
		}
	})
}

func BenchmarkParseOpenAIUsage(b *testing.B) {
	raw := []byte(usageSamples[0])
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ParseOpenAIUsage(raw)
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			parseUsageReflect(raw)
		}
	})
}
