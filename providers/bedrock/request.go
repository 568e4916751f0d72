package bedrock

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// defaultJSONTool names the forced tool that carries a structured answer when the caller
// named no schema.
const defaultJSONTool = "json_response"

// Built is a translated request plus what the response translation must know.
type Built struct {
	Request *Request
	// JSONTool is set when response_format was mapped to a forced tool: that tool's input is
	// the answer's content, and its tool_use stop is an ordinary stop.
	JSONTool string
}

// BuildOptions tunes the translation.
type BuildOptions struct {
	// Images bounds downloads of http(s) image URLs (Bedrock takes only inline bytes).
	Images providers.ImageLimits
}

func param(i int, rest string) string { return "messages[" + strconv.Itoa(i) + "]" + rest }

// BuildRequest translates a canonical chat into a Converse request (reference providers.md §8).
// Structured output: with no caller tools, response_format becomes a single forced tool whose
// input is the answer (works on every tool-capable model); alongside caller tools it becomes
// outputConfig.textFormat so the caller's tools stay usable. Failures are 400 *Error values.
func BuildRequest(ctx context.Context, c *providers.Chat, opts BuildOptions) (*Built, error) {
	if c.N > 1 {
		return nil, providers.Errorf(http.StatusBadRequest, "unsupported_parameter", "n", "n > 1 is not supported by Bedrock models")
	}
	r := &Request{}
	out := &Built{Request: r}

	system, rest := c.SplitSystem()
	for _, p := range system {
		if p.Text != "" {
			r.System = append(r.System, Block{Text: ptr(p.Text)})
		}
		if p.CacheControl != nil {
			r.System = appendCachePoint(r.System, p.CacheControl)
		}
	}

	usesTools := false
	for i := range rest {
		m := &rest[i]
		var role string
		var blocks []Block
		var err error
		switch m.Role {
		case providers.RoleUser:
			role = "user"
			blocks, err = userBlocks(ctx, m.Content, i, opts)
		case providers.RoleAssistant:
			role = "assistant"
			blocks, err = assistantBlocks(m, i)
			usesTools = usesTools || len(m.ToolCalls) > 0
		case providers.RoleTool:
			role = "user"
			blocks, err = toolResult(ctx, m, i, opts)
			usesTools = true
		default:
			return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", param(i, ".role"), "role %q is not supported", m.Role)
		}
		if err != nil {
			return nil, err
		}
		if m.CacheControl != nil && len(blocks) > 0 {
			blocks = appendCachePoint(blocks, m.CacheControl)
		}
		if len(blocks) == 0 {
			continue
		}
		// Bedrock validates strict user/assistant alternation: merge consecutive turns.
		if n := len(r.Messages); n > 0 && r.Messages[n-1].Role == role {
			r.Messages[n-1].Content = append(r.Messages[n-1].Content, blocks...)
		} else {
			r.Messages = append(r.Messages, Message{Role: role, Content: blocks})
		}
	}
	if len(r.Messages) == 0 {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", "messages", "at least one non-system message with content is required")
	}
	// A top-level cache_control (automatic caching) marks the end of the conversation.
	if c.CacheControl != nil {
		last := &r.Messages[len(r.Messages)-1]
		last.Content = appendCachePoint(last.Content, c.CacheControl)
	}

	ic := &InferenceCfg{MaxTokens: c.MaxTokens, TopP: c.TopP, StopSequences: c.Stop}
	if c.Temperature != nil {
		t := min(max(*c.Temperature, 0), 1) // Bedrock's range is 0–1
		ic.Temperature = &t
	}
	if ic.MaxTokens != 0 || ic.Temperature != nil || ic.TopP != nil || len(ic.StopSequences) > 0 {
		r.InferenceConfig = ic
	}
	if c.TopK != nil {
		r.AdditionalModelRequestFields, _ = json.Marshal(map[string]int64{"top_k": *c.TopK})
	}

	if err := buildTools(c, r, usesTools, out); err != nil {
		return nil, err
	}
	return out, nil
}

func buildTools(c *providers.Chat, r *Request, usesTools bool, out *Built) error {
	var tc ToolConfig
	for _, t := range c.Tools {
		schema := t.Parameters
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		tc.Tools = append(tc.Tools, ToolEntry{ToolSpec: &ToolSpec{Name: t.Name, Description: t.Description, InputSchema: InputSchema{JSON: schema}}})
		if t.CacheControl != nil {
			tc.Tools = append(tc.Tools, ToolEntry{CachePoint: cachePoint(t.CacheControl)})
		}
	}
	if ch := c.ToolChoice; ch != nil && len(tc.Tools) > 0 {
		switch ch.Mode {
		case providers.ToolChoiceAuto:
			tc.ToolChoice = &ToolChoice{Auto: &struct{}{}}
		case providers.ToolChoiceRequired:
			tc.ToolChoice = &ToolChoice{Any: &struct{}{}}
		case providers.ToolChoiceFunction:
			tc.ToolChoice = &ToolChoice{Tool: &NamedTool{Name: ch.Name}}
		case providers.ToolChoiceNone:
			// Converse has no "none": drop the tools, unless the history holds tool blocks,
			// which Bedrock rejects without a toolConfig; then keep them and drop only the choice.
			if !usesTools {
				tc.Tools = nil
			}
		}
	}

	if rf := c.ResponseFormat; rf != nil {
		schema := rf.Schema
		if rf.Type == providers.FormatJSONObject || len(schema) == 0 {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		if len(tc.Tools) == 0 {
			name := rf.Name
			if name == "" {
				name = defaultJSONTool
			}
			desc := rf.Description
			if desc == "" {
				desc = "Respond by calling this tool with the answer as its input."
			}
			tc.Tools = []ToolEntry{{ToolSpec: &ToolSpec{Name: name, Description: desc, InputSchema: InputSchema{JSON: schema}}}}
			tc.ToolChoice = &ToolChoice{Tool: &NamedTool{Name: name}}
			out.JSONTool = name
		} else {
			oc := &OutputConfig{}
			oc.TextFormat.Type = "json_schema"
			oc.TextFormat.Structure.JSONSchema = JSONSchema{Name: rf.Name, Description: rf.Description, Schema: string(schema)}
			r.OutputConfig = oc
		}
	}
	if len(tc.Tools) > 0 {
		r.ToolConfig = &tc
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func cachePoint(cc *providers.CacheControl) *CachePoint {
	cp := &CachePoint{Type: "default"}
	if cc.TTL == "1h" {
		cp.TTL = "1h"
	}
	return cp
}

// appendCachePoint adds a checkpoint after the blocks, unless one is already last.
func appendCachePoint(blocks []Block, cc *providers.CacheControl) []Block {
	if n := len(blocks); n > 0 && blocks[n-1].CachePoint != nil {
		return blocks
	}
	return append(blocks, Block{CachePoint: cachePoint(cc)})
}

// imageFormats maps media types to Bedrock's image formats.
var imageFormats = map[string]string{"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}

func userBlocks(ctx context.Context, parts []providers.Part, i int, opts BuildOptions) ([]Block, error) {
	blocks := make([]Block, 0, len(parts))
	for j, p := range parts {
		pp := param(i, ".content["+strconv.Itoa(j)+"]")
		switch p.Type {
		case providers.PartText:
			if p.Text != "" { // Bedrock rejects blank text blocks
				blocks = append(blocks, Block{Text: ptr(p.Text)})
			}
		case providers.PartImageURL:
			img, err := providers.FetchImage(ctx, p.Image.URL, opts.Images)
			if err != nil {
				if pe, ok := err.(*providers.Error); ok && pe.Param == "" {
					pe.Param = pp + ".image_url.url"
				}
				return nil, err
			}
			format, ok := imageFormats[img.MediaType]
			if !ok {
				return nil, providers.Errorf(http.StatusBadRequest, "unsupported_image_format", pp+".image_url.url",
					"image type %s is not supported; use png, jpeg, gif or webp", img.MediaType)
			}
			blocks = append(blocks, Block{Image: &Image{Format: format, Source: ImageSource{Bytes: img.Data}}})
		default:
			return nil, providers.Errorf(http.StatusBadRequest, "unsupported_content", pp,
				"content part type %q is not supported for Bedrock models", p.Type)
		}
		if p.CacheControl != nil && len(blocks) > 0 {
			blocks = appendCachePoint(blocks, p.CacheControl)
		}
	}
	return blocks, nil
}

func assistantBlocks(m *providers.Message, i int) ([]Block, error) {
	var blocks []Block
	if r := m.Reasoning; r != nil {
		for _, tb := range r.Blocks {
			switch tb.Type {
			case "thinking":
				if tb.Signature != "" {
					blocks = append(blocks, Block{ReasoningContent: &ReasoningContent{ReasoningText: &ReasoningText{Text: tb.Thinking, Signature: tb.Signature}}})
				}
			case "redacted_thinking":
				if data, err := providers.DecodeBase64(tb.Data); err == nil {
					blocks = append(blocks, Block{ReasoningContent: &ReasoningContent{RedactedContent: data}})
				}
			}
		}
	}
	for _, p := range m.Content {
		if p.Type == providers.PartText && p.Text != "" {
			blocks = append(blocks, Block{Text: ptr(p.Text)})
			if p.CacheControl != nil {
				blocks = appendCachePoint(blocks, p.CacheControl)
			}
		}
	}
	if m.Refusal != "" && len(blocks) == 0 {
		blocks = append(blocks, Block{Text: ptr(m.Refusal)})
	}
	for j, tc := range m.ToolCalls {
		input := json.RawMessage("{}")
		if s := strings.TrimSpace(tc.Arguments); s != "" {
			if !json.Valid([]byte(s)) || s[0] != '{' {
				return nil, providers.Errorf(http.StatusBadRequest, "invalid_value",
					param(i, ".tool_calls["+strconv.Itoa(j)+"].function.arguments"), "tool call arguments must be a JSON object")
			}
			input = json.RawMessage(s)
		}
		blocks = append(blocks, Block{ToolUse: &ToolUse{ToolUseID: tc.ID, Name: tc.Name, Input: input}})
	}
	return blocks, nil
}

func toolResult(ctx context.Context, m *providers.Message, i int, opts BuildOptions) ([]Block, error) {
	tr := &ToolResult{ToolUseID: m.ToolCallID, Status: "success"}
	for j, p := range m.Content {
		switch p.Type {
		case providers.PartText:
			if p.Text != "" {
				tr.Content = append(tr.Content, Block{Text: ptr(p.Text)})
			}
		case providers.PartImageURL:
			p.CacheControl = nil // checkpoints go after the tool result, not inside it
			b, err := userBlocks(ctx, []providers.Part{p}, i, opts)
			if err != nil {
				return nil, err
			}
			tr.Content = append(tr.Content, b...)
		default:
			return nil, providers.Errorf(http.StatusBadRequest, "unsupported_content", param(i, ".content["+strconv.Itoa(j)+"]"),
				"content part type %q is not supported in tool results for Bedrock models", p.Type)
		}
	}
	if len(tr.Content) == 0 {
		tr.Content = []Block{{Text: ptr("(empty)")}}
	}
	blocks := []Block{{ToolResult: tr}}
	for _, p := range m.Content {
		if p.CacheControl != nil {
			blocks = appendCachePoint(blocks, p.CacheControl)
			break
		}
	}
	return blocks, nil
}
