package providers

import (
	"reflect"
	"testing"
)

// TestContentShapes: shapes an upstream would reject get a 400 naming the parameter before
// any upstream call; every shape a client legitimately sends passes.
func TestContentShapes(t *testing.T) {
	for _, tc := range []struct {
		messages string
		param    string // "" = accepted
	}{
		{`[{"role":"user","content":"hi"}]`, ""},
		{`[{"role":"user","content":["a","b"]}]`, ""},
		{`[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}]`, ""},
		{`[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]}]`, ""},
		{`[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]`, ""},
		{`[{"role":"user","content":[{"type":"file","file":{"file_data":"data:application/pdf;base64,AAAA"}}]}]`, ""},
		{`[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]}]`, ""},
		{`[{"role":"user","content":[{"type":"input_text","text":"a"}]}]`, ""},
		{`[{"role":"developer","content":"d"},{"role":"function","name":"f","content":"x"}]`, ""},
		{`[{"role":"user","content":"hi","x-extra":{"any":"thing"}}]`, ""},

		{`[{"role":"user","content":{"type":"text","text":"hi"}}]`, "messages[0].content"},
		{`[{"role":"user","content":42}]`, "messages[0].content"},
		{`[{"role":"user","content":true}]`, "messages[0].content"},
		{`[{"role":"user","Content":{"a":1}}]`, "messages[0].content"},
		{`[{"role":"user","content":[{"text":"no type"}]}]`, "messages[0].content[0].type"},
		{`[{"role":"user","content":[{"type":"video","video":{}}]}]`, "messages[0].content[0].type"},
		{`[{"role":"user","content":[{"type":7}]}]`, "messages[0].content[0].type"},
		{`[{"role":"user","content":[42]}]`, "messages[0].content[0]"},
		{`[{"role":"user","content":[[]]}]`, "messages[0].content[0]"},
		{`[{"role":"user","content":[{"type":"text"}]}]`, "messages[0].content[0].text"},
		{`[{"role":"user","content":[{"type":"text","text":{"nested":1}}]}]`, "messages[0].content[0].text"},
		{`[{"role":"user","content":[{"type":"image_url","image_url":"https://x/y.png"}]}]`, "messages[0].content[0].image_url"},
		{`[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]`, "messages[0].content[0].image_url"},
		{`[{"role":"user","content":[{"type":"file","file":"x"}]}]`, "messages[0].content[0].file"},
		{`[{"role":"user","content":"a"},{"content":"no role"}]`, "messages[1].role"},
		{`[{"role":5,"content":"a"}]`, "messages[0].role"},
		{`[{"role":"admin","content":"a"}]`, "messages[0].role"},
		{`[{"role":"assistant","content":"a","tool_calls":{"id":"x"}}]`, "messages[0].tool_calls"},
		{`["hi"]`, "messages[0]"},
	} {
		_, err := ParseChatRequest([]byte(`{"model":"m","messages":` + tc.messages + `}`))
		switch {
		case tc.param == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.messages, err)
		case tc.param != "" && err == nil:
			t.Errorf("%s: accepted, want 400 on %s", tc.messages, tc.param)
		case tc.param != "":
			if pe := err.(*Error); pe.Status != 400 || pe.Param != tc.param {
				t.Errorf("%s: %d on %q, want 400 on %s", tc.messages, pe.Status, pe.Param, tc.param)
			}
		}
	}
}

func TestProviderRefs(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":[
		{"type":"image_url","image_url":{"url":"gs://operator-bucket/secret.png"}},
		{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},
		{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
		{"type":"image_url","image_url":{"url":"S3://bucket/key.png"}},
		{"type":"image_url","image_url":{"url":"HTTPS://example.com/b.png"}},
		{"type":"file","file":{"file_id":"file-abc123"}},
		{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]}`
	req, err := ParseChatRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"gs://operator-bucket/secret.png", "S3://bucket/key.png", "file-abc123", "file:///etc/passwd"}
	if !reflect.DeepEqual(req.ProviderRefs, want) {
		t.Errorf("refs = %q, want %q", req.ProviderRefs, want)
	}
}
