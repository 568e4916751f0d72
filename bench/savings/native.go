package main

// Direct clients, written the way users write them for each provider's own API: the OpenAI
// SDK shape without gateway-only fields; Anthropic Messages with the caller's max_tokens,
// 8,192 where the caller gave none (max_tokens is required there); Bedrock Converse and Claude
// on Vertex with the same rule for Claude; Gemini generateContent with the caller's
// maxOutputTokens, if any. None of them adds cache markers: a plain SDK call does not.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers/googleauth"
	"github.com/badtheorylabs/btl-runtime/providers/sigv4"
)

// callerDefaultMaxTokens is what a Claude caller sets when it has no particular limit in mind
// (the baseline; Anthropic's own examples use 1,024–8,192).
const callerDefaultMaxTokens = 8192

// provider is one upstream column of the table.
type provider struct {
	name    string // table label
	gateway string // the model the gateway client names ("<provider>/<model>")
	price   string // catalog id the usage is priced at
	model   string // the provider's own model id, for direct calls
	format  string // openai | anthropic | bedrock | vertex | gemini
}

var allProviders = []provider{
	{"OpenAI", "oai/gpt-4.1", "gpt-4.1", "gpt-4.1", "openai"},
	{"Anthropic", "anth/claude-sonnet-4-5", "claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic"},
	{"Bedrock", "bed/anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5", "anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock"},
	{"Vertex", "vtx/claude-sonnet-4-5@20250929", "claude-sonnet-4-5", "claude-sonnet-4-5@20250929", "vertex"},
	{"Gemini", "gem/gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash", "gemini"},
}

// Credentials the simulator checks; the direct clients and the gateway hold the same
// accounts (the gateway is one more client of the operator's keys).
const (
	openAIKey    = "sk-bench-openai"
	anthropicKey = "sk-ant-bench"
	awsKeyID     = "AKIABENCHSAVINGS0001"
	awsSecret    = "bench/savings/secret/key/0000000000000"
	geminiKey    = "AIzaBenchSavings"
	vertexPath   = "/v1/projects/btl-bench/locations/us-east5/publishers/anthropic/models/"
)

// direct sends one OpenAI-shaped request body to the provider's own API, translated the way a
// user of that API writes it, and returns the answer's text.
func (e *env) direct(p provider, body map[string]any) (string, error) {
	var (
		url  string
		wire any
		hdr  = http.Header{"Content-Type": {"application/json"}}
	)
	switch p.format {
	case "openai":
		b := clone(body)
		b["model"] = p.model
		url, wire = e.upstream+"/v1/chat/completions", b
		hdr.Set("Authorization", "Bearer "+openAIKey)
	case "anthropic":
		m := anthropicBody(body)
		m["model"] = p.model
		url, wire = e.upstream+"/v1/messages", m
		hdr.Set("X-Api-Key", anthropicKey)
		hdr.Set("Anthropic-Version", "2023-06-01")
	case "vertex":
		m := anthropicBody(body)
		m["anthropic_version"] = "vertex-2023-10-16"
		url, wire = e.upstream+vertexPath+p.model+":rawPredict", m
		tok, err := e.vertexToken.Token(context.Background())
		if err != nil {
			return "", err
		}
		hdr.Set("Authorization", "Bearer "+tok)
	case "bedrock":
		path, raw := sigv4.ModelPath(p.model, "converse")
		url, wire = e.upstream+raw, converseBody(body)
		_ = path
	case "gemini":
		url, wire = e.upstream+"/v1beta/models/"+p.model+":generateContent", geminiBody(body)
		hdr.Set("X-Goog-Api-Key", geminiKey)
	}
	raw, err := json.Marshal(wire)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(raw))
	if err != nil {
		return "", err
	}
	req.Header = hdr
	if p.format == "bedrock" {
		s := sigv4.Signer{Credentials: sigv4.Credentials{AccessKeyID: awsKeyID, SecretAccessKey: awsSecret}, Region: "us-east-1", Service: "bedrock"}
		if err := s.Sign(req, raw); err != nil {
			return "", err
		}
	}
	return call(req, "direct "+p.name, p.format)
}

// call sends req and returns the answer's text, read in the given format.
func call(req *http.Request, what, format string) (string, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %d %s", what, resp.StatusCode, truncate(out))
	}
	return answerText(format, out), nil
}

// answerText reads the answer out of a provider's native response.
func answerText(format string, b []byte) string {
	var v struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
		Output struct {
			Message struct {
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"message"`
		} `json:"output"`
		Candidates []struct {
			Content struct {
				Parts []struct {
					Text string `json:"text"`
				} `json:"parts"`
			} `json:"content"`
		} `json:"candidates"`
	}
	_ = json.Unmarshal(b, &v)
	var s []string
	for _, c := range v.Choices {
		s = append(s, c.Message.Content)
	}
	for _, c := range v.Content {
		s = append(s, c.Text)
	}
	for _, c := range v.Output.Message.Content {
		s = append(s, c.Text)
	}
	for _, c := range v.Candidates {
		for _, p := range c.Content.Parts {
			s = append(s, p.Text)
		}
	}
	return strings.Join(s, "")
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// A chat message of the workloads, read back from its map.
type chatMsg struct {
	role, content, toolCallID string
	calls                     []toolCall
}

type toolCall struct{ id, name, args string }

func messagesOf(body map[string]any) []chatMsg {
	var out []chatMsg
	for _, raw := range body["messages"].([]any) {
		m := raw.(map[string]any)
		cm := chatMsg{role: m["role"].(string)}
		if s, ok := m["content"].(string); ok {
			cm.content = s
		}
		if id, ok := m["tool_call_id"].(string); ok {
			cm.toolCallID = id
		}
		if calls, ok := m["tool_calls"].([]any); ok {
			for _, c := range calls {
				cc := c.(map[string]any)
				fn := cc["function"].(map[string]any)
				cm.calls = append(cm.calls, toolCall{cc["id"].(string), fn["name"].(string), fn["arguments"].(string)})
			}
		}
		out = append(out, cm)
	}
	return out
}

type toolDef struct {
	name, description string
	parameters        any
}

func toolsOf(body map[string]any) []toolDef {
	var out []toolDef
	tools, _ := body["tools"].([]any)
	for _, t := range tools {
		fn := t.(map[string]any)["function"].(map[string]any)
		out = append(out, toolDef{fn["name"].(string), fn["description"].(string), fn["parameters"]})
	}
	return out
}

func maxTokensOf(body map[string]any) (int, bool) {
	for _, k := range []string{"max_completion_tokens", "max_tokens"} {
		if v, ok := body[k].(int); ok {
			return v, true
		}
	}
	return 0, false
}

func argsObject(s string) map[string]any {
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil || m == nil {
		m = map[string]any{}
	}
	return m
}

// anthropicBody is the Messages request a user of Anthropic's SDK writes for the workload's
// call: system as a string, tool results in a user turn, max_tokens their own or 8,192.
func anthropicBody(body map[string]any) map[string]any {
	out := map[string]any{}
	max, ok := maxTokensOf(body)
	if !ok {
		max = callerDefaultMaxTokens
	}
	out["max_tokens"] = max
	if t, ok := body["temperature"]; ok {
		out["temperature"] = t
	}
	var system []string
	var msgs []any
	var pendingResults []any
	flush := func() {
		if len(pendingResults) > 0 {
			msgs = append(msgs, map[string]any{"role": "user", "content": pendingResults})
			pendingResults = nil
		}
	}
	for _, m := range messagesOf(body) {
		switch m.role {
		case "system", "developer":
			system = append(system, m.content)
		case "tool":
			pendingResults = append(pendingResults, map[string]any{"type": "tool_result", "tool_use_id": m.toolCallID, "content": m.content})
		case "user":
			flush()
			msgs = append(msgs, map[string]any{"role": "user", "content": m.content})
		case "assistant":
			flush()
			if len(m.calls) == 0 {
				msgs = append(msgs, map[string]any{"role": "assistant", "content": m.content})
				continue
			}
			var blocks []any
			for _, c := range m.calls {
				blocks = append(blocks, map[string]any{"type": "tool_use", "id": c.id, "name": c.name, "input": argsObject(c.args)})
			}
			msgs = append(msgs, map[string]any{"role": "assistant", "content": blocks})
		}
	}
	flush()
	if len(system) > 0 {
		out["system"] = strings.Join(system, "\n\n")
	}
	out["messages"] = msgs
	if tools := toolsOf(body); len(tools) > 0 {
		var ts []any
		for _, t := range tools {
			ts = append(ts, map[string]any{"name": t.name, "description": t.description, "input_schema": t.parameters})
		}
		out["tools"] = ts
	}
	return out
}

// converseBody is the Bedrock Converse request for the workload's call.
func converseBody(body map[string]any) map[string]any {
	out := map[string]any{}
	max, ok := maxTokensOf(body)
	if !ok {
		max = callerDefaultMaxTokens
	}
	inf := map[string]any{"maxTokens": max}
	if t, ok := body["temperature"]; ok {
		inf["temperature"] = t
	}
	out["inferenceConfig"] = inf
	var system, msgs, pending []any
	flush := func() {
		if len(pending) > 0 {
			msgs = append(msgs, map[string]any{"role": "user", "content": pending})
			pending = nil
		}
	}
	for _, m := range messagesOf(body) {
		switch m.role {
		case "system", "developer":
			system = append(system, map[string]any{"text": m.content})
		case "tool":
			pending = append(pending, map[string]any{"toolResult": map[string]any{"toolUseId": m.toolCallID, "content": []any{map[string]any{"text": m.content}}}})
		case "user":
			flush()
			msgs = append(msgs, map[string]any{"role": "user", "content": []any{map[string]any{"text": m.content}}})
		case "assistant":
			flush()
			var blocks []any
			if m.content != "" {
				blocks = append(blocks, map[string]any{"text": m.content})
			}
			for _, c := range m.calls {
				blocks = append(blocks, map[string]any{"toolUse": map[string]any{"toolUseId": c.id, "name": c.name, "input": argsObject(c.args)}})
			}
			msgs = append(msgs, map[string]any{"role": "assistant", "content": blocks})
		}
	}
	flush()
	if len(system) > 0 {
		out["system"] = system
	}
	out["messages"] = msgs
	if tools := toolsOf(body); len(tools) > 0 {
		var ts []any
		for _, t := range tools {
			ts = append(ts, map[string]any{"toolSpec": map[string]any{"name": t.name, "description": t.description, "inputSchema": map[string]any{"json": t.parameters}}})
		}
		out["toolConfig"] = map[string]any{"tools": ts}
	}
	return out
}

// geminiBody is the generateContent request for the workload's call.
func geminiBody(body map[string]any) map[string]any {
	out := map[string]any{}
	gen := map[string]any{}
	if max, ok := maxTokensOf(body); ok {
		gen["maxOutputTokens"] = max
	}
	if t, ok := body["temperature"]; ok {
		gen["temperature"] = t
	}
	if len(gen) > 0 {
		out["generationConfig"] = gen
	}
	var system []string
	var contents, pending []any
	names := map[string]string{}
	flush := func() {
		if len(pending) > 0 {
			contents = append(contents, map[string]any{"role": "user", "parts": pending})
			pending = nil
		}
	}
	for _, m := range messagesOf(body) {
		switch m.role {
		case "system", "developer":
			system = append(system, m.content)
		case "tool":
			pending = append(pending, map[string]any{"functionResponse": map[string]any{"name": names[m.toolCallID], "response": map[string]any{"content": m.content}}})
		case "user":
			flush()
			contents = append(contents, map[string]any{"role": "user", "parts": []any{map[string]any{"text": m.content}}})
		case "assistant":
			flush()
			var parts []any
			if m.content != "" {
				parts = append(parts, map[string]any{"text": m.content})
			}
			for _, c := range m.calls {
				names[c.id] = c.name
				parts = append(parts, map[string]any{"functionCall": map[string]any{"name": c.name, "args": argsObject(c.args)}})
			}
			contents = append(contents, map[string]any{"role": "model", "parts": parts})
		}
	}
	flush()
	if len(system) > 0 {
		out["systemInstruction"] = map[string]any{"parts": []any{map[string]any{"text": strings.Join(system, "\n\n")}}}
	}
	out["contents"] = contents
	if tools := toolsOf(body); len(tools) > 0 {
		var fs []any
		for _, t := range tools {
			fs = append(fs, map[string]any{"name": t.name, "description": t.description, "parameters": t.parameters})
		}
		out["tools"] = []any{map[string]any{"functionDeclarations": fs}}
	}
	return out
}

// newVertexToken makes a token source for the simulator's service account.
func newVertexToken(saJSON []byte, tokenURL string) (*googleauth.Source, error) {
	sa, err := googleauth.ParseServiceAccount(saJSON)
	if err != nil {
		return nil, err
	}
	return googleauth.NewSource(sa, googleauth.Options{TokenURI: tokenURL})
}
