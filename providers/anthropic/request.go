package anthropic

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// BuildOptions tunes the request translation.
type BuildOptions struct {
	// DefaultMaxTokens is used when the caller set no output limit; 0 picks one by model.
	DefaultMaxTokens int64
}

// DefaultMaxTokensFor is the max_tokens sent when the caller gave none: what the model can
// produce, capped at 8192 so a forgotten limit does not reserve a huge budget (older Claude 3
// models top out at 4096).
func DefaultMaxTokensFor(model string) int64 {
	m := strings.ToLower(model)
	for _, p := range []string{"claude-3-haiku", "claude-3-opus", "claude-3-sonnet", "claude-2", "claude-instant"} {
		if strings.Contains(m, p) {
			return 4096
		}
	}
	return 8192
}

// thinkingBudget maps reasoning_effort to an extended-thinking budget.
var thinkingBudget = map[string]int64{"low": 1024, "medium": 4096, "high": 16384}

// jsonObjectInstruction stands in for response_format json_object, which Anthropic has no
// native switch for (a schema-less output_config is not accepted).
const jsonObjectInstruction = "Respond with a single valid JSON object and nothing else."

// BuildRequest translates a canonical chat into a Messages request (reference providers.md §8).
// model may be "" (Vertex takes the model from the URL). Every failure is a 400 *Error.
func BuildRequest(c *providers.Chat, model string, opts BuildOptions) (*Request, error) {
	if c.N > 1 {
		return nil, providers.Errorf(http.StatusBadRequest, "unsupported_parameter", "n", "n > 1 is not supported by Anthropic models")
	}
	r := &Request{Model: model, Stream: c.Stream, CacheControl: c.CacheControl, TopP: c.TopP, TopK: c.TopK}
	r.MaxTokens = c.MaxTokens
	if r.MaxTokens == 0 {
		r.MaxTokens = opts.DefaultMaxTokens
	}
	if r.MaxTokens == 0 {
		r.MaxTokens = DefaultMaxTokensFor(model)
	}
	if c.Temperature != nil {
		t := min(max(*c.Temperature, 0), 1)
		r.Temperature = &t
	}
	if len(c.Stop) > 0 {
		r.StopSequences = c.Stop
	}
	if c.User != "" {
		r.Metadata = &Metadata{UserID: c.User}
	}

	system, rest := c.SplitSystem()
	for _, p := range system {
		if p.Text == "" {
			continue
		}
		r.System = append(r.System, Block{Type: "text", Text: p.Text, CacheControl: p.CacheControl})
	}

	if rf := c.ResponseFormat; rf != nil {
		switch rf.Type {
		case providers.FormatJSONSchema:
			schema := rf.Schema
			if len(schema) == 0 {
				schema = json.RawMessage(`{"type":"object"}`)
			}
			r.OutputConfig = &OutputConfig{Format: &OutputFormat{Type: "json_schema", Schema: schema}}
		case providers.FormatJSONObject:
			r.System = append(r.System, Block{Type: "text", Text: jsonObjectInstruction})
		}
	}

	msgs, err := buildMessages(rest)
	if err != nil {
		return nil, err
	}
	r.Messages = msgs

	for _, t := range c.Tools {
		schema := t.Parameters
		if len(schema) == 0 {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		tool := Tool{Name: t.Name, Description: t.Description, InputSchema: schema, CacheControl: t.CacheControl}
		if t.Strict != nil && *t.Strict {
			tool.Strict = t.Strict
		}
		r.Tools = append(r.Tools, tool)
	}
	if len(r.Tools) > 0 {
		if tc := c.ToolChoice; tc != nil {
			switch tc.Mode {
			case providers.ToolChoiceAuto:
				r.ToolChoice = &ToolChoice{Type: "auto"}
			case providers.ToolChoiceRequired:
				r.ToolChoice = &ToolChoice{Type: "any"}
			case providers.ToolChoiceNone:
				r.ToolChoice = &ToolChoice{Type: "none"}
			case providers.ToolChoiceFunction:
				r.ToolChoice = &ToolChoice{Type: "tool", Name: tc.Name}
			}
		}
		if c.ParallelToolCalls != nil && !*c.ParallelToolCalls {
			if r.ToolChoice == nil {
				r.ToolChoice = &ToolChoice{Type: "auto"}
			}
			if r.ToolChoice.Type != "none" {
				r.ToolChoice.DisableParallelToolUse = true
			}
		}
	}

	if budget, ok := thinkingBudget[c.ReasoningEffort]; ok {
		r.Thinking = &Thinking{Type: "enabled", BudgetTokens: budget}
		if r.MaxTokens <= budget {
			r.MaxTokens += budget
		}
		// Extended thinking is incompatible with temperature, top_k and forced tool use.
		r.Temperature, r.TopK = nil, nil
		if r.ToolChoice != nil && (r.ToolChoice.Type == "any" || r.ToolChoice.Type == "tool") {
			r.ToolChoice = &ToolChoice{Type: "auto", DisableParallelToolUse: r.ToolChoice.DisableParallelToolUse}
		}
	}
	return r, nil
}

// buildMessages turns the non-system conversation into alternating user/assistant turns:
// consecutive tool results (and a user message right after them) merge into one user turn
// with the tool_result blocks first, as the API requires; consecutive same-role messages merge.
func buildMessages(msgs []providers.Message) ([]MessageParam, error) {
	out := make([]MessageParam, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		var role string
		var blocks []Block
		var err error
		switch m.Role {
		case providers.RoleUser:
			role = "user"
			blocks, err = userBlocks(m, i)
		case providers.RoleTool:
			role = "user"
			blocks, err = toolResultBlock(m, i)
		case providers.RoleAssistant:
			role = "assistant"
			blocks, err = assistantBlocks(m, i)
		}
		if err != nil {
			return nil, err
		}
		if len(blocks) == 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Role == role {
			out[n-1].Content = append(out[n-1].Content, blocks...)
			continue
		}
		out = append(out, MessageParam{Role: role, Content: blocks})
	}
	if len(out) == 0 {
		return nil, providers.Errorf(http.StatusBadRequest, "missing_required_parameter", "messages",
			"at least one user or assistant message is required")
	}
	return out, nil
}

func markLast(blocks []Block, cc *providers.CacheControl) {
	if cc == nil || len(blocks) == 0 {
		return
	}
	if last := &blocks[len(blocks)-1]; last.CacheControl == nil {
		last.CacheControl = cc
	}
}

func userBlocks(m *providers.Message, i int) ([]Block, error) {
	blocks := make([]Block, 0, len(m.Content))
	for j, p := range m.Content {
		b, ok, err := partBlock(p, i, j)
		if err != nil {
			return nil, err
		}
		if ok {
			blocks = append(blocks, b)
		}
	}
	markLast(blocks, m.CacheControl)
	return blocks, nil
}

// partBlock translates one user content part. Empty text parts are dropped (the API rejects
// them).
func partBlock(p providers.Part, i, j int) (Block, bool, error) {
	switch p.Type {
	case providers.PartText:
		if p.Text == "" {
			return Block{}, false, nil
		}
		return Block{Type: "text", Text: p.Text, CacheControl: p.CacheControl}, true, nil
	case providers.PartImageURL:
		b := Block{Type: "image", CacheControl: p.CacheControl}
		if media, data, ok := p.Image.Inline(); ok {
			b.Source = &Source{Type: "base64", MediaType: media, Data: data}
		} else if strings.HasPrefix(p.Image.URL, "http://") || strings.HasPrefix(p.Image.URL, "https://") {
			b.Source = &Source{Type: "url", URL: p.Image.URL}
		} else {
			return Block{}, false, providers.Errorf(http.StatusBadRequest, "invalid_image_url", partParam(i, j)+".image_url.url",
				"image_url.url must be a base64 data: URL or an http(s) URL")
		}
		return b, true, nil
	case providers.PartFile:
		var f struct {
			File struct {
				FileData string `json:"file_data"`
				FileID   string `json:"file_id"`
			} `json:"file"`
		}
		_ = json.Unmarshal(p.Raw, &f)
		if media, data, ok := providers.ParseDataURL(f.File.FileData); ok && (media == "application/pdf" || media == "text/plain") {
			return Block{Type: "document", Source: &Source{Type: "base64", MediaType: media, Data: data}, CacheControl: p.CacheControl}, true, nil
		}
		return Block{}, false, providers.Errorf(http.StatusBadRequest, "unsupported_content", partParam(i, j),
			"only PDF or text files given as base64 data URLs are supported for Anthropic models")
	}
	return Block{}, false, providers.Errorf(http.StatusBadRequest, "unsupported_content", partParam(i, j),
		"content part type %q is not supported for Anthropic models", p.Type)
}

func partParam(i, j int) string {
	return "messages[" + itoa(i) + "].content[" + itoa(j) + "]"
}

func itoa(i int) string { return strconv.Itoa(i) }

func toolResultBlock(m *providers.Message, i int) ([]Block, error) {
	b := Block{Type: "tool_result", ToolUseID: m.ToolCallID, CacheControl: m.CacheControl}
	for j, p := range m.Content {
		if p.Type == providers.PartText {
			if p.Text != "" {
				b.Content = append(b.Content, Block{Type: "text", Text: p.Text, CacheControl: p.CacheControl})
			}
			continue
		}
		pb, ok, err := partBlock(p, i, j)
		if err != nil {
			return nil, err
		}
		if ok {
			b.Content = append(b.Content, pb)
		}
	}
	// A part-level marker on the last part is the tool result's marker.
	if n := len(b.Content); n > 0 && b.CacheControl == nil && b.Content[n-1].CacheControl != nil {
		b.CacheControl, b.Content[n-1].CacheControl = b.Content[n-1].CacheControl, nil
	}
	return []Block{b}, nil
}

func assistantBlocks(m *providers.Message, i int) ([]Block, error) {
	var blocks []Block
	if r := m.Reasoning; r != nil {
		// Only signed blocks can be replayed; plain reasoning_content text has no signature
		// and Anthropic would reject it, so it is dropped.
		for _, tb := range r.Blocks {
			switch tb.Type {
			case "thinking":
				if tb.Signature != "" {
					blocks = append(blocks, Block{Type: "thinking", Thinking: tb.Thinking, Signature: tb.Signature})
				}
			case "redacted_thinking":
				blocks = append(blocks, Block{Type: "redacted_thinking", Data: tb.Data})
			}
		}
	}
	for _, p := range m.Content {
		if p.Type == providers.PartText && p.Text != "" {
			blocks = append(blocks, Block{Type: "text", Text: p.Text, CacheControl: p.CacheControl})
		}
	}
	for j, tc := range m.ToolCalls {
		input := json.RawMessage("{}")
		if s := strings.TrimSpace(tc.Arguments); s != "" {
			if !json.Valid([]byte(s)) || s[0] != '{' {
				return nil, providers.Errorf(http.StatusBadRequest, "invalid_value",
					"messages["+itoa(i)+"].tool_calls["+itoa(j)+"].function.arguments", "tool call arguments must be a JSON object")
			}
			input = json.RawMessage(s)
		}
		blocks = append(blocks, Block{Type: "tool_use", ID: tc.ID, Name: tc.Name, Input: input})
	}
	markLast(blocks, m.CacheControl)
	return blocks, nil
}
