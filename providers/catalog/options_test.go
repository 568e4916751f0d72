package catalog

import (
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
)

func TestFindUnpricedOption(t *testing.T) {
	user := `{"role":"user","content":"hi"}`
	for _, tc := range []struct {
		name, body, param string
	}{
		{"plain chat", `{"model":"m","messages":[` + user + `]}`, ""},
		{"text that ends in audio", `{"model":"m","messages":[{"role":"user","content":"I like audio"}],"metadata":{"k":"audio"}}`, ""},
		{"text modality only", `{"model":"m","messages":[` + user + `],"modalities":["text"]}`, ""},
		{"audio modality", `{"model":"m","messages":[` + user + `],"modalities":["text","audio"]}`, "modalities"},
		{"audio parameter", `{"model":"m","messages":[` + user + `],"audio":{"voice":"alloy","format":"wav"}}`, "audio"},
		{"audio null", `{"model":"m","messages":[` + user + `],"audio":null}`, ""},
		{"web search", `{"model":"m","messages":[` + user + `],"web_search_options":{}}`, "web_search_options"},
		{"web search null", `{"model":"m","messages":[` + user + `],"web_search_options":null}`, ""},
		{"plugins", `{"model":"m","messages":[` + user + `],"plugins":[{"id":"web"}]}`, "plugins"},
		{"no plugins", `{"model":"m","messages":[` + user + `],"plugins":[ ]}`, ""},
		{"audio input", `{"model":"m","messages":[` + user + `,{"role":"user","content":[{"type":"text","text":"listen"},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}`, "messages[1].content[1]"},
		{"audio input, content in another case", `{"model":"m","messages":[{"role":"user","Content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}`, "messages[0].content[0]"},
		{"audio input, escaped key", `{"model":"m","messages":[{"role":"user","\u0063ontent":[{"type":"input\u005faudio","input_audio":{"data":"AAAA","format":"wav"}}]}]}`, "messages[0].content[0]"},
		{"a part whose text says input_audio", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"input_audio"}]}]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := providers.ParseChatRequest([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			got, found := FindUnpricedOption(req)
			if found != (tc.param != "") || got.Param != tc.param {
				t.Fatalf("got %+v (found %v), want param %q", got, found, tc.param)
			}
			if found && got.What == "" {
				t.Fatal("no description")
			}
		})
	}
}

// BenchmarkFindUnpricedOption is the check on a long prompt with no billable option (nearly
// every request): the cost the meter adds to each.
func BenchmarkFindUnpricedOption(b *testing.B) {
	text := strings.Repeat("Summarise this text about radio and audio in three bullet points, please. ", 1500)
	req, err := providers.ParseChatRequest([]byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + text + `"}],"modalities":["text"]}`))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(req.Body)))
	for b.Loop() {
		if _, found := FindUnpricedOption(req); found {
			b.Fatal("found")
		}
	}
}
