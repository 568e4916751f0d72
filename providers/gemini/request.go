package gemini

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// BuildOptions tunes the translation.
type BuildOptions struct {
	// Images bounds downloads of http(s) image URLs (inlined as inlineData).
	Images providers.ImageLimits
}

func param(i int, rest string) string { return "messages[" + strconv.Itoa(i) + "]" + rest }

// BuildRequest translates a canonical chat into a GenerateContentRequest (reference
// providers.md §8). Failures are 400 *Error values.
func BuildRequest(ctx context.Context, c *providers.Chat, opts BuildOptions) (*Request, error) {
	if c.N > 1 {
		// candidateCount exists, but a chat.completion carries the gateway's one choice.
		return nil, providers.Errorf(http.StatusBadRequest, "unsupported_parameter", "n", "n > 1 is not supported by Gemini models through this gateway")
	}
	r := &Request{}
	system, rest := c.SplitSystem()
	if len(system) > 0 {
		sys := &Content{}
		for _, p := range system {
			if p.Text != "" {
				sys.Parts = append(sys.Parts, Part{Text: p.Text})
			}
		}
		if len(sys.Parts) > 0 {
			r.SystemInstruction = sys
		}
	}
	callNames := map[string]string{} // tool call id → function name
	for i := range rest {
		m := &rest[i]
		var role string
		var parts []Part
		var err error
		switch m.Role {
		case providers.RoleUser:
			role = "user"
			parts, err = userParts(ctx, m.Content, i, opts)
		case providers.RoleAssistant:
			role = "model"
			parts, err = modelParts(m, i, callNames)
		case providers.RoleTool:
			role = "user"
			parts, err = functionResponse(m, i, callNames)
		default:
			return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", param(i, ".role"), "role %q is not supported", m.Role)
		}
		if err != nil {
			return nil, err
		}
		if len(parts) == 0 {
			continue
		}
		// One content per turn: consecutive tool results share one user content, as Gemini
		// pairs all function responses of a turn with its function calls.
		if n := len(r.Contents); n > 0 && r.Contents[n-1].Role == role {
			r.Contents[n-1].Parts = append(r.Contents[n-1].Parts, parts...)
		} else {
			r.Contents = append(r.Contents, Content{Role: role, Parts: parts})
		}
	}
	if len(r.Contents) == 0 {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", "messages", "at least one non-system message with content is required")
	}

	if len(c.Tools) > 0 {
		decls := make([]FunctionDeclaration, 0, len(c.Tools))
		for _, t := range c.Tools {
			decls = append(decls, FunctionDeclaration{Name: t.Name, Description: t.Description, Parameters: SanitizeSchema(t.Parameters)})
		}
		r.Tools = []Tool{{FunctionDeclarations: decls}}
		if ch := c.ToolChoice; ch != nil {
			fc := FunctionCallingConfig{}
			switch ch.Mode {
			case providers.ToolChoiceNone:
				fc.Mode = "NONE"
			case providers.ToolChoiceRequired:
				fc.Mode = "ANY"
			case providers.ToolChoiceFunction:
				fc.Mode, fc.AllowedFunctionNames = "ANY", []string{ch.Name}
			default:
				fc.Mode = "AUTO"
			}
			r.ToolConfig = &ToolConfig{FunctionCallingConfig: fc}
		}
	}

	g := &GenerationConfig{MaxOutputTokens: c.MaxTokens, Temperature: c.Temperature, TopP: c.TopP, TopK: c.TopK,
		StopSequences: c.Stop, Seed: c.Seed, PresencePenalty: c.PresencePenalty, FrequencyPenalty: c.FrequencyPenalty}
	if rf := c.ResponseFormat; rf != nil {
		g.ResponseMimeType = "application/json"
		if rf.Type == providers.FormatJSONSchema {
			g.ResponseSchema = SanitizeSchema(rf.Schema)
		}
	}
	if b, _ := json.Marshal(g); string(b) != "{}" {
		r.GenerationConfig = g
	}
	return r, nil
}

func userParts(ctx context.Context, parts []providers.Part, i int, opts BuildOptions) ([]Part, error) {
	out := make([]Part, 0, len(parts))
	for j, p := range parts {
		pp := param(i, ".content["+strconv.Itoa(j)+"]")
		switch p.Type {
		case providers.PartText:
			if p.Text != "" {
				out = append(out, Part{Text: p.Text})
			}
		case providers.PartImageURL:
			u := p.Image.URL
			if media, b64, ok := providers.ParseDataURL(u); ok {
				out = append(out, Part{InlineData: &Blob{MimeType: media, Data: b64}})
				continue
			}
			if strings.HasPrefix(u, "gs://") {
				// Read with the operator's identity: only what the operator allowed for the
				// caller's workspace (the route refuses the rest before any attempt).
				if !providers.AllowedRef(ctx, u) {
					return nil, providers.Errorf(http.StatusBadRequest, "invalid_image_url", pp+".image_url.url",
						"gs:// URLs are not allowed for this workspace; send an https or data: URL")
				}
				out = append(out, Part{FileData: &FileData{MimeType: mime.TypeByExtension(path.Ext(u)), FileURI: u}})
				continue
			}
			img, err := providers.FetchImage(ctx, u, opts.Images)
			if err != nil {
				if pe, ok := err.(*providers.Error); ok && pe.Param == "" {
					pe.Param = pp + ".image_url.url"
				}
				return nil, err
			}
			out = append(out, Part{InlineData: &Blob{MimeType: img.MediaType, Data: base64.StdEncoding.EncodeToString(img.Data)}})
		case providers.PartInputAudio:
			var a struct {
				InputAudio struct {
					Data   string `json:"data"`
					Format string `json:"format"`
				} `json:"input_audio"`
			}
			if json.Unmarshal(p.Raw, &a) != nil || a.InputAudio.Data == "" {
				return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", pp, "input_audio needs data and format")
			}
			out = append(out, Part{InlineData: &Blob{MimeType: "audio/" + a.InputAudio.Format, Data: a.InputAudio.Data}})
		case providers.PartFile:
			var f struct {
				File struct {
					FileData string `json:"file_data"`
				} `json:"file"`
			}
			_ = json.Unmarshal(p.Raw, &f)
			media, b64, ok := providers.ParseDataURL(f.File.FileData)
			if !ok {
				return nil, providers.Errorf(http.StatusBadRequest, "unsupported_content", pp, "files must be given as base64 data URLs for Gemini models")
			}
			out = append(out, Part{InlineData: &Blob{MimeType: media, Data: b64}})
		default:
			return nil, providers.Errorf(http.StatusBadRequest, "unsupported_content", pp, "content part type %q is not supported for Gemini models", p.Type)
		}
	}
	return out, nil
}

func modelParts(m *providers.Message, i int, callNames map[string]string) ([]Part, error) {
	var out []Part
	for _, p := range m.Content {
		if p.Type == providers.PartText && p.Text != "" {
			out = append(out, Part{Text: p.Text})
		}
	}
	for j, tc := range m.ToolCalls {
		args := json.RawMessage("{}")
		if s := strings.TrimSpace(tc.Arguments); s != "" {
			if !json.Valid([]byte(s)) || s[0] != '{' {
				return nil, providers.Errorf(http.StatusBadRequest, "invalid_value",
					param(i, ".tool_calls["+strconv.Itoa(j)+"].function.arguments"), "tool call arguments must be a JSON object")
			}
			args = json.RawMessage(s)
		}
		callNames[tc.ID] = tc.Name
		out = append(out, Part{FunctionCall: &FunctionCall{Name: tc.Name, Args: args}, ThoughtSignature: ThoughtSignature(tc)})
	}
	return out, nil
}

func functionResponse(m *providers.Message, i int, callNames map[string]string) ([]Part, error) {
	name, ok := callNames[m.ToolCallID]
	if !ok {
		return nil, providers.Errorf(http.StatusBadRequest, "invalid_value", param(i, ".tool_call_id"),
			"tool_call_id %q does not match a tool call of an earlier assistant message", m.ToolCallID)
	}
	text := m.Text()
	resp := json.RawMessage(nil)
	if t := strings.TrimSpace(text); strings.HasPrefix(t, "{") && json.Valid([]byte(t)) {
		resp = json.RawMessage(t)
	} else {
		resp, _ = json.Marshal(map[string]string{"result": text})
	}
	return []Part{{FunctionResponse: &FunctionResponse{Name: name, Response: resp}}}, nil
}

// Tool-call ids. Gemini function calls carry no id (or one Vertex would reject on replay), so
// the gateway makes a stable one from the call's name, position and arguments. A Gemini 3
// thought signature must come back with the call on the next turn, or the API answers 400; it
// travels two ways: in extra_content.google.thought_signature (Google's own OpenAI
// convention, for clients that echo extra fields) and inside the id itself (every client
// echoes ids): "call_<16 hex>_ts_<base64url signature>".
const (
	idPrefix  = "call_"
	sigMarker = "_ts_"
	hashHex   = 16
)

// CallID builds the tool-call id of the index-th function call of a turn.
func CallID(name string, index int, args []byte, signature string) string {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(index)))
	h.Write([]byte{0})
	h.Write(args)
	id := idPrefix + hex.EncodeToString(h.Sum(nil))[:hashHex]
	if signature != "" {
		id += sigMarker + base64.RawURLEncoding.EncodeToString([]byte(signature))
	}
	return id
}

// Extra builds the extra_content object for a signature, nil when there is none.
func Extra(signature string) json.RawMessage {
	if signature == "" {
		return nil
	}
	b, _ := json.Marshal(map[string]map[string]string{"google": {"thought_signature": signature}})
	return b
}

// ThoughtSignature restores the signature of a tool call the caller echoed back.
func ThoughtSignature(tc providers.ToolCall) string {
	if len(tc.Extra) > 0 {
		var e struct {
			Google struct {
				ThoughtSignature string `json:"thought_signature"`
			} `json:"google"`
		}
		if json.Unmarshal(tc.Extra, &e) == nil && e.Google.ThoughtSignature != "" {
			return e.Google.ThoughtSignature
		}
	}
	rest, ok := strings.CutPrefix(tc.ID, idPrefix)
	if !ok || len(rest) <= hashHex+len(sigMarker) || rest[hashHex:hashHex+len(sigMarker)] != sigMarker {
		return ""
	}
	sig, err := base64.RawURLEncoding.DecodeString(rest[hashHex+len(sigMarker):])
	if err != nil {
		return ""
	}
	return string(sig)
}
