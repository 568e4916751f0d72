package simulated

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/badtheorylabs/btl-runtime/providers/googleauth"
)

// Google Gemini API and Vertex AI (Gemini) simulation (reference providers.md §5, tokenopt.md
// §1.4), plus a fake OAuth2 token endpoint.
//
// Routes:
//   - POST /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse, with an
//     x-goog-api-key header (when SetGeminiAPIKey was called the key must match, else 400
//     API_KEY_INVALID as Google answers; a missing key is 403).
//   - POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent and
//     :streamGenerateContent?alt=sse, with "Authorization: Bearer <token>" where the token was
//     issued by this simulator's /token and has not expired or been revoked (else 401
//     UNAUTHENTICATED). Function calls with an id are rejected there, as Vertex does.
//   - POST /token: the JWT bearer grant. The assertion must be an RS256 JWT signed by a key
//     made with GoogleServiceAccount, with aud = this endpoint's URL, a scope and a lifetime
//     of at most an hour; anything else is 400 invalid_grant. Tokens live GoogleTokenTTL.
//
// Validation: contents must be non-empty with roles user/model and non-empty parts; a
// functionResponse must answer a functionCall of the previous model turn. Models named
// gemini-3* act as thinking models: their first function call carries a thoughtSignature, and
// a replayed model turn whose first function call lacks one is 400 INVALID_ARGUMENT.
//
// Usage follows Gemini's implicit caching: per API key (or service account), prompts of at
// least 1024 tokens are cached at 1024+128k boundaries like the OpenAI simulation, and
// promptTokenCount includes cachedContentTokenCount.
//
// Streams are "data: <GenerateContentResponse>\r\n\r\n" events without [DONE]: text parts are
// deltas, function calls come whole, finishReason and the full usage ride on the last chunk.
// Directives work as for chat completions; [sim:blocked] answers HTTP 200 with no candidates
// and promptFeedback.blockReason SAFETY; status=429 carries RetryInfo.retryDelay (retry_after,
// default 1s) and a per-minute QuotaFailure (code=daily makes it a per-day quota).

// GeminiRequest is what the simulator last received on a Gemini route.
type GeminiRequest struct {
	Path   string
	Vertex bool
	Body   []byte
}

type googleState struct {
	mu      sync.Mutex
	apiKey  string
	keys    map[string]*rsa.PublicKey // client_email → key
	tokens  map[string]googleToken
	ttl     time.Duration
	nSA     int
	last    *GeminiRequest
	grants  int
	rejects int
}

type googleToken struct {
	email  string
	expiry time.Time
}

func (g *googleState) reset() {
	g.mu.Lock()
	g.last = nil
	g.mu.Unlock()
}

// SetGeminiAPIKey makes the Gemini API routes accept only key.
func (s *Server) SetGeminiAPIKey(key string) {
	s.google.mu.Lock()
	s.google.apiKey = key
	s.google.mu.Unlock()
}

// SetGoogleTokenTTL sets the lifetime of tokens issued by /token (default one hour).
func (s *Server) SetGoogleTokenTTL(d time.Duration) {
	s.google.mu.Lock()
	s.google.ttl = d
	s.google.mu.Unlock()
}

// RevokeGoogleTokens invalidates every issued access token, as a key rotation would.
func (s *Server) RevokeGoogleTokens() {
	s.google.mu.Lock()
	clear(s.google.tokens)
	s.google.mu.Unlock()
}

// GoogleTokenGrants reports how many tokens /token issued and how many grants it refused.
func (s *Server) GoogleTokenGrants() (issued, refused int) {
	s.google.mu.Lock()
	defer s.google.mu.Unlock()
	return s.google.grants, s.google.rejects
}

// LastGeminiRequest returns the last request received on a Gemini route.
func (s *Server) LastGeminiRequest() (GeminiRequest, bool) {
	s.google.mu.Lock()
	defer s.google.mu.Unlock()
	if s.google.last == nil {
		return GeminiRequest{}, false
	}
	return *s.google.last, true
}

// GoogleServiceAccount makes a new RSA key, registers its public half with /token and returns
// a service-account JSON key file whose token_uri is tokenURI.
func (s *Server) GoogleServiceAccount(tokenURI string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	s.google.mu.Lock()
	s.google.nSA++
	email := fmt.Sprintf("sim-%d@btl-sim.iam.gserviceaccount.com", s.google.nSA)
	if s.google.keys == nil {
		s.google.keys = map[string]*rsa.PublicKey{}
	}
	s.google.keys[email] = &key.PublicKey
	s.google.mu.Unlock()
	return json.Marshal(map[string]string{
		"type": "service_account", "project_id": "btl-sim", "private_key_id": hex.EncodeToString(der[len(der)-8:]),
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": email, "token_uri": tokenURI,
	})
}

// serveGemini answers the Gemini, Vertex (Gemini) and /token routes.
func (s *Server) serveGemini(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	var model, verb string
	vertex := false
	switch {
	case p == "/token":
		if r.Method != http.MethodPost {
			s.notAllowed(w, r)
			return true
		}
		s.googleToken(w, r)
		return true
	case strings.HasPrefix(p, "/v1beta/models/"):
		model, verb, _ = strings.Cut(strings.TrimPrefix(p, "/v1beta/models/"), ":")
	case strings.HasPrefix(p, "/v1/projects/") && strings.Contains(p, "/publishers/google/models/"):
		_, rest, _ := strings.Cut(p, "/publishers/google/models/")
		model, verb, _ = strings.Cut(rest, ":")
		vertex = true
	default:
		return false
	}
	if model != "" && r.Method == http.MethodPost && ((!vertex && verb == "batchEmbedContents") || (vertex && verb == "predict")) {
		s.googleEmbed(w, r, model, vertex)
		return true
	}
	if model == "" || (verb != "generateContent" && verb != "streamGenerateContent") {
		return false
	}
	if r.Method != http.MethodPost {
		s.notAllowed(w, r)
		return true
	}
	s.generateContent(w, r, model, verb == "streamGenerateContent", vertex)
	return true
}

// googleAuthorized checks a Vertex bearer token or a Gemini API key, answering Google's error
// when it fails, and returns who called.
func (s *Server) googleAuthorized(w http.ResponseWriter, r *http.Request, vertex bool, now time.Time) (string, bool) {
	var principal string
	if vertex {
		tok := bearer(r)
		s.google.mu.Lock()
		t, ok := s.google.tokens[tok]
		s.google.mu.Unlock()
		if tok == "" || !ok || !now.Before(t.expiry) {
			s.stats.rejected.Add(1)
			writeGoogleError(w, http.StatusUnauthorized, "UNAUTHENTICATED",
				"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
			return "", false
		}
		principal = t.email
	} else {
		key := r.Header.Get("X-Goog-Api-Key")
		s.google.mu.Lock()
		want := s.google.apiKey
		s.google.mu.Unlock()
		switch {
		case key == "":
			s.stats.rejected.Add(1)
			writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.")
			return "", false
		case want != "" && key != want:
			s.stats.rejected.Add(1)
			writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
				map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"})
			return "", false
		}
		principal = key
	}
	return principal, true
}

// readGoogleBody reads a Gemini or Vertex request body and records it as the last request.
func (s *Server) readGoogleBody(w http.ResponseWriter, r *http.Request, vertex bool) ([]byte, bool) {
	buf, err := readBody(r, s.opts.MaxBodyBytes)
	if err != nil {
		s.stats.rejected.Add(1)
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Request payload size exceeds the limit.")
		return nil, false
	}
	body := bytes.Clone(buf.Bytes())
	putBody(buf)
	s.google.mu.Lock()
	s.google.last = &GeminiRequest{Path: r.URL.Path, Vertex: vertex, Body: body}
	s.google.mu.Unlock()
	return body, true
}

func (s *Server) googleToken(w http.ResponseWriter, r *http.Request) {
	refuse := func(desc string) {
		s.google.mu.Lock()
		s.google.rejects++
		s.google.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		b, _ := json.Marshal(map[string]string{"error": "invalid_grant", "error_description": desc})
		_, _ = w.Write(b)
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != googleauth.GrantType {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"unsupported_grant_type","error_description":"Invalid grant_type."}`))
		return
	}
	now := s.opts.Now()
	aud := "http://" + r.Host + r.URL.Path
	lookup := func(iss string) (*rsa.PublicKey, bool) {
		s.google.mu.Lock()
		defer s.google.mu.Unlock()
		k, ok := s.google.keys[iss]
		return k, ok
	}
	claims, err := googleauth.VerifyAssertion(r.PostForm.Get("assertion"), lookup, aud, now)
	if err != nil {
		claims, err = googleauth.VerifyAssertion(r.PostForm.Get("assertion"), lookup, "https://"+r.Host+r.URL.Path, now)
	}
	if err != nil {
		if errors.Is(err, googleauth.ErrBadSignature) {
			refuse("Invalid JWT Signature.")
		} else {
			refuse("Invalid JWT: " + err.Error())
		}
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	tok := "ya29.sim-" + hex.EncodeToString(b[:])
	s.google.mu.Lock()
	ttl := s.google.ttl
	if ttl <= 0 {
		ttl = time.Hour
	}
	if s.google.tokens == nil {
		s.google.tokens = map[string]googleToken{}
	}
	s.google.tokens[tok] = googleToken{email: claims.Iss, expiry: now.Add(ttl)}
	s.google.grants++
	s.google.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": int(ttl / time.Second), "token_type": "Bearer"})
}

// googleStatus writes a google.rpc.Status error.
func writeGoogleError(w http.ResponseWriter, code int, status, msg string, details ...any) {
	e := map[string]any{"code": code, "message": msg, "status": status}
	if len(details) > 0 {
		e["details"] = details
	}
	writeJSON(w, code, map[string]any{"error": e})
}

// Wire shapes as the simulator decodes them.
type (
	gWire struct {
		SystemInstruction *gContent       `json:"systemInstruction"`
		Contents          []gContent      `json:"contents"`
		Tools             []gTool         `json:"tools"`
		ToolConfig        *gToolConfig    `json:"toolConfig"`
		GenerationConfig  *gGenConfig     `json:"generationConfig"`
		SafetySettings    json.RawMessage `json:"safetySettings"`
		CachedContent     string          `json:"cachedContent"`
		Labels            json.RawMessage `json:"labels"`
	}
	gContent struct {
		Role  string  `json:"role"`
		Parts []gPart `json:"parts"`
	}
	gPart struct {
		Text       *string `json:"text"`
		Thought    bool    `json:"thought"`
		InlineData *struct {
			MimeType string `json:"mimeType"`
			Data     string `json:"data"`
		} `json:"inlineData"`
		FileData *struct {
			MimeType string `json:"mimeType"`
			FileURI  string `json:"fileUri"`
		} `json:"fileData"`
		FunctionCall *struct {
			ID   string          `json:"id"`
			Name string          `json:"name"`
			Args json.RawMessage `json:"args"`
		} `json:"functionCall"`
		FunctionResponse *struct {
			ID       string          `json:"id"`
			Name     string          `json:"name"`
			Response json.RawMessage `json:"response"`
		} `json:"functionResponse"`
		ThoughtSignature string `json:"thoughtSignature"`
	}
	gTool struct {
		FunctionDeclarations []struct {
			Name                 string          `json:"name"`
			Description          string          `json:"description"`
			Parameters           json.RawMessage `json:"parameters"`
			ParametersJSONSchema json.RawMessage `json:"parametersJsonSchema"`
		} `json:"functionDeclarations"`
	}
	gToolConfig struct {
		FunctionCallingConfig struct {
			Mode                 string   `json:"mode"`
			AllowedFunctionNames []string `json:"allowedFunctionNames"`
		} `json:"functionCallingConfig"`
	}
	gGenConfig struct {
		MaxOutputTokens    *int64          `json:"maxOutputTokens"`
		Temperature        *float64        `json:"temperature"`
		TopP               *float64        `json:"topP"`
		TopK               *float64        `json:"topK"`
		CandidateCount     *int64          `json:"candidateCount"`
		StopSequences      []string        `json:"stopSequences"`
		Seed               *int64          `json:"seed"`
		PresencePenalty    *float64        `json:"presencePenalty"`
		FrequencyPenalty   *float64        `json:"frequencyPenalty"`
		ResponseMimeType   string          `json:"responseMimeType"`
		ResponseSchema     json.RawMessage `json:"responseSchema"`
		ResponseJSONSchema json.RawMessage `json:"responseJsonSchema"`
		ThinkingConfig     json.RawMessage `json:"thinkingConfig"`
	}
)

// lowerTypes rewrites Gemini's upper-case schema types to JSON Schema's, so the simulator's
// JSON generator reads the schema.
func lowerTypes(raw json.RawMessage) json.RawMessage {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return raw
	}
	var walk func(any)
	walk = func(n any) {
		switch t := n.(type) {
		case map[string]any:
			for k, x := range t {
				if s, ok := x.(string); ok && k == "type" {
					t[k] = strings.ToLower(s)
				} else {
					walk(x)
				}
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	walk(v)
	b, _ := json.Marshal(v)
	return b
}

type gBad struct{ msg string }

// geminiToOpenAI validates a generateContent request and maps it onto a chat request.
func geminiToOpenAI(w *gWire, model string, vertex bool) (*oaReq, *gBad) {
	oa := &oaReq{Model: model}
	if si := w.SystemInstruction; si != nil {
		sys := &oaMsg{Role: "system"}
		for _, p := range si.Parts {
			if p.Text != nil {
				sys.addText(*p.Text)
			}
		}
		sys.finish()
		oa.Messages = append(oa.Messages, sys)
	}
	if len(w.Contents) == 0 {
		return nil, &gBad{"* GenerateContentRequest.contents: contents is not specified"}
	}
	thinking := strings.HasPrefix(model, "gemini-3")
	var pending []oaCall // calls of the previous model turn awaiting responses
	callN := 0
	for i, c := range w.Contents {
		if c.Role != "user" && c.Role != "model" && c.Role != "" {
			return nil, &gBad{fmt.Sprintf("Please use a valid role: user, model. (contents[%d].role %q)", i, c.Role)}
		}
		if len(c.Parts) == 0 {
			return nil, &gBad{fmt.Sprintf("* GenerateContentRequest.contents[%d].parts: contents.parts must not be empty.", i)}
		}
		role := "user"
		if c.Role == "model" {
			role = "assistant"
		}
		cur := &oaMsg{Role: role}
		var tools []*oaMsg
		var calls []oaCall
		for j, p := range c.Parts {
			switch {
			case p.Text != nil:
				if p.Thought {
					continue
				}
				cur.addText(*p.Text)
			case p.InlineData != nil:
				data, err := base64.StdEncoding.DecodeString(p.InlineData.Data)
				if err != nil || p.InlineData.MimeType == "" {
					return nil, &gBad{fmt.Sprintf("Invalid value at 'contents[%d].parts[%d].inline_data.data' (TYPE_BYTES), Base64 decoding failed", i, j)}
				}
				cur.addImage(p.InlineData.MimeType, data)
			case p.FileData != nil:
				cur.addText("[file " + p.FileData.FileURI + "]")
			case p.FunctionCall != nil:
				if role != "assistant" {
					return nil, &gBad{fmt.Sprintf("contents[%d].parts[%d]: functionCall is only allowed in model turns", i, j)}
				}
				if vertex && p.FunctionCall.ID != "" {
					return nil, &gBad{fmt.Sprintf("Invalid JSON payload received. Unknown name \"id\" at 'contents[%d].parts[%d].function_call': Cannot find field.", i, j)}
				}
				if thinking && len(calls) == 0 && p.ThoughtSignature == "" {
					return nil, &gBad{fmt.Sprintf("Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:%s` , position %d.", p.FunctionCall.Name, i+1)}
				}
				args := p.FunctionCall.Args
				if len(args) == 0 {
					args = json.RawMessage("{}")
				}
				oc := oaCall{ID: "call_g" + strconv.Itoa(callN), Type: "function"}
				callN++
				oc.Function.Name, oc.Function.Arguments = p.FunctionCall.Name, string(args)
				calls = append(calls, oc)
			case p.FunctionResponse != nil:
				if role != "user" {
					return nil, &gBad{fmt.Sprintf("contents[%d].parts[%d]: functionResponse is only allowed in user turns", i, j)}
				}
				id := ""
				for k, pc := range pending {
					if pc.Function.Name == p.FunctionResponse.Name {
						id = pc.ID
						pending = append(pending[:k], pending[k+1:]...)
						break
					}
				}
				if id == "" {
					return nil, &gBad{"Please ensure that function response turn comes immediately after a function call turn. And the number of function response parts should be equal to number of function call parts of the function call turn."}
				}
				if len(p.FunctionResponse.Response) == 0 || p.FunctionResponse.Response[0] != '{' {
					return nil, &gBad{fmt.Sprintf("contents[%d].parts[%d].function_response.response must be an object", i, j)}
				}
				tm := &oaMsg{Role: "tool", ToolCallID: id}
				tm.addText(string(p.FunctionResponse.Response))
				tools = append(tools, tm)
			default:
				return nil, &gBad{fmt.Sprintf("contents[%d].parts[%d]: part must carry data", i, j)}
			}
		}
		if len(pending) > 0 {
			return nil, &gBad{"Please ensure that function response turn comes immediately after a function call turn. And the number of function response parts should be equal to number of function call parts of the function call turn."}
		}
		cur.ToolCalls = calls
		pending = append(pending[:0], calls...)
		for _, tm := range tools {
			tm.finish()
			oa.Messages = append(oa.Messages, tm)
		}
		if len(cur.parts) > 0 || len(cur.ToolCalls) > 0 {
			cur.finish()
			oa.Messages = append(oa.Messages, cur)
		}
	}
	for _, t := range w.Tools {
		for _, fd := range t.FunctionDeclarations {
			var ot oaTool
			ot.Type = "function"
			ot.Function.Name, ot.Function.Description = fd.Name, fd.Description
			switch {
			case len(fd.Parameters) > 0:
				if bytes.Contains(fd.Parameters, []byte(`"additionalProperties"`)) || bytes.Contains(fd.Parameters, []byte(`"$schema"`)) {
					return nil, &gBad{"Invalid JSON payload received. Unknown name \"additionalProperties\" at 'tools[0].function_declarations[0].parameters': Cannot find field."}
				}
				ot.Function.Parameters = lowerTypes(fd.Parameters)
			case len(fd.ParametersJSONSchema) > 0:
				ot.Function.Parameters = fd.ParametersJSONSchema
			}
			oa.Tools = append(oa.Tools, ot)
		}
	}
	if tc := w.ToolConfig; tc != nil && len(oa.Tools) > 0 {
		switch fc := tc.FunctionCallingConfig; fc.Mode {
		case "NONE":
			oa.ToolChoice = "none"
		case "ANY":
			if len(fc.AllowedFunctionNames) == 1 {
				oa.ToolChoice = map[string]any{"type": "function", "function": map[string]string{"name": fc.AllowedFunctionNames[0]}}
			} else {
				oa.ToolChoice = "required"
			}
		case "AUTO", "", "MODE_UNSPECIFIED", "VALIDATED":
			oa.ToolChoice = "auto"
		default:
			return nil, &gBad{"Invalid value at 'tool_config.function_calling_config.mode'"}
		}
	}
	if g := w.GenerationConfig; g != nil {
		if g.MaxOutputTokens != nil {
			oa.MaxTokens = g.MaxOutputTokens
		}
		if g.Temperature != nil && (*g.Temperature < 0 || *g.Temperature > 2) {
			return nil, &gBad{"* GenerateContentRequest.generation_config.temperature: must be in [0, 2]"}
		}
		if len(g.StopSequences) > 5 {
			return nil, &gBad{"* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences"}
		}
		if g.ResponseMimeType == "application/json" {
			switch {
			case len(g.ResponseSchema) > 0:
				oa.ResponseFormat, _ = json.Marshal(map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "out", "schema": lowerTypes(g.ResponseSchema)}})
			case len(g.ResponseJSONSchema) > 0:
				oa.ResponseFormat, _ = json.Marshal(map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "out", "schema": g.ResponseJSONSchema}})
			default:
				oa.ResponseFormat = json.RawMessage(`{"type":"json_object"}`)
			}
		}
	}
	return oa, nil
}

var directiveBlocked = []byte("blocked")

// hasFlag reports whether a [sim:…] block of text holds the bare item name.
func hasFlag(text, name []byte) bool {
	for {
		i := bytes.Index(text, simOpen)
		if i < 0 {
			return false
		}
		rest := text[i+len(simOpen):]
		end := bytes.IndexByte(rest, ']')
		if end < 0 {
			return false
		}
		for item := range bytes.SplitSeq(rest[:end], []byte{','}) {
			if bytes.Equal(bytes.TrimSpace(item), name) {
				return true
			}
		}
		text = rest[end+1:]
	}
}

func (s *Server) generateContent(w http.ResponseWriter, r *http.Request, model string, stream, vertex bool) {
	s.stats.requests.Add(1)
	h := w.Header()
	h.Set("X-Request-Id", fmt.Sprintf("sim-%08d-gemini", s.seq.Add(1)))
	now := s.opts.Now()

	principal, ok := s.googleAuthorized(w, r, vertex, now)
	if !ok {
		return
	}
	if stream && r.URL.Query().Get("alt") != "sse" {
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "the simulator streams only with alt=sse")
		return
	}
	body, ok := s.readGoogleBody(w, r, vertex)
	if !ok {
		return
	}

	var wire gWire
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wire); err != nil {
		s.stats.rejected.Add(1)
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error())
		return
	}
	oa, bad := geminiToOpenAI(&wire, model, vertex)
	if bad != nil {
		s.stats.rejected.Add(1)
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", bad.msg)
		return
	}
	oaBody, _ := json.Marshal(oa)
	st := statePool.Get().(*reqState)
	defer putState(st)
	var p parsed
	if perr := parse(oaBody, st, &p); perr != nil {
		s.stats.rejected.Add(1)
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", perr.Message)
		return
	}
	if stream {
		s.stats.streams.Add(1)
	}
	var d directives
	parseDirectives(p.lastUser, &d)
	s.drawFault(&d)
	ctx := r.Context()
	if !sleepCtx(ctx, s.opts.Latency+d.ttfb) {
		return
	}
	if d.status != 0 {
		s.geminiFault(w, &d)
		return
	}

	var all uint64
	st.bounds, all = prefixBounds(st.bounds, st.canon, st.msgStarts, p.promptToks)
	cached := s.cache.lookupStore(st.bounds, mix64(fnvString(fnvOffset^0x6e, principal)), s.cacheNow().UnixNano(), int64(s.opts.CacheTTL))
	reqHash := mix64(fnvString(all^uint64(s.opts.Seed), model))
	respID := string(appendHex(nil, reqHash))
	usage := map[string]any{"promptTokenCount": p.promptToks, "totalTokenCount": p.promptToks}
	if cached > 0 {
		usage["cachedContentTokenCount"] = cached
	}
	if hasFlag(p.lastUser, directiveBlocked) {
		s.stats.fault("blocked")
		s.stats.answer(principal, p.promptToks, cached, 0)
		out := map[string]any{"promptFeedback": map[string]any{"blockReason": "SAFETY"}, "usageMetadata": usage, "modelVersion": model, "responseId": respID}
		if stream {
			s.geminiEvents(w, r, &d, []map[string]any{out})
			return
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	res := s.generate(&p, &d, st, reqHash)
	s.stats.answer(principal, p.promptToks, cached, res.completion)
	finish := "STOP"
	if res.finish == "length" {
		finish = "MAX_TOKENS"
	}
	final := map[string]any{"promptTokenCount": p.promptToks, "candidatesTokenCount": res.completion, "totalTokenCount": p.promptToks + res.completion}
	if cached > 0 {
		final["cachedContentTokenCount"] = cached
	}
	var callParts []map[string]any
	for i, c := range res.toolCalls {
		part := map[string]any{"functionCall": map[string]any{"name": c.name, "args": json.RawMessage(c.args)}}
		if i == 0 && strings.HasPrefix(model, "gemini-3") {
			part["thoughtSignature"] = base64.StdEncoding.EncodeToString([]byte("sim-signature:" + c.id))
		}
		callParts = append(callParts, part)
	}
	chunk := func(parts []map[string]any, last bool) map[string]any {
		cand := map[string]any{"content": map[string]any{"role": "model", "parts": parts}, "index": 0}
		u := usage
		if last {
			cand["finishReason"] = finish
			u = final
		}
		return map[string]any{"candidates": []any{cand}, "usageMetadata": u, "modelVersion": model, "responseId": respID}
	}
	if !stream {
		var parts []map[string]any
		if res.content != nil {
			parts = append(parts, map[string]any{"text": string(res.content)})
		}
		parts = append(parts, callParts...)
		if d.hold != "" {
			s.stats.note("hold")
			if !s.wait(ctx, d.hold) {
				return
			}
		}
		if d.cutAfter >= 0 {
			s.stats.fault("cut")
			b, _ := json.Marshal(chunk(parts, true))
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(b[:len(b)/2])
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
		writeJSON(w, http.StatusOK, chunk(parts, true))
		return
	}
	var events []map[string]any
	if res.content != nil {
		pieces := split(res.content, s.opts.ChunksPerAnswer)
		for i, piece := range pieces {
			events = append(events, chunk([]map[string]any{{"text": string(piece)}}, i == len(pieces)-1))
		}
	} else {
		events = append(events, chunk(callParts, true))
	}
	s.geminiEvents(w, r, &d, events)
}

// geminiEvents writes SSE events with \r\n line endings and no [DONE].
func (s *Server) geminiEvents(w http.ResponseWriter, r *http.Request, d *directives, events []map[string]any) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	h := w.Header()
	h["Content-Type"] = hvSSE
	h["Cache-Control"] = hvNoCache
	w.WriteHeader(http.StatusOK)
	delay := s.opts.ChunkDelay + d.chunkDelay
	for i, ev := range events {
		if d.cutAfter >= 0 && i == d.cutAfter {
			s.stats.fault("cut")
			panic(http.ErrAbortHandler)
		}
		if d.streamErrorAfter >= 0 && i == d.streamErrorAfter {
			s.stats.fault("stream_error")
			_, _ = w.Write([]byte("data: {\"error\":{\"code\":500,\"message\":\"An internal error has occurred.\",\"status\":\"INTERNAL\"}}\r\n\r\n"))
			_ = rc.Flush()
			return
		}
		if i > 0 && delay > 0 && !sleepCtx(ctx, delay) {
			return
		}
		b, _ := json.Marshal(ev)
		b = append(append([]byte("data: "), b...), "\r\n\r\n"...)
		if ctx.Err() != nil {
			return
		}
		if _, err := w.Write(b); err != nil || rc.Flush() != nil {
			return
		}
		if i == 0 && d.hold != "" {
			s.stats.note("hold")
			if !s.wait(ctx, d.hold) {
				return
			}
		}
	}
}

var googleStatusNames = map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
	429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}

// geminiFault answers a [sim:status=…] directive with a google.rpc.Status error.
func (s *Server) geminiFault(w http.ResponseWriter, d *directives) {
	s.stats.fault("status_" + strconv.Itoa(d.status))
	name, ok := googleStatusNames[d.status]
	if !ok {
		name = "UNKNOWN"
	}
	switch d.status {
	case http.StatusTooManyRequests:
		delay := d.retryAfter
		if delay <= 0 {
			delay = time.Second
		}
		quota := "GenerateRequestsPerMinutePerProjectPerModel"
		if d.code == "daily" {
			quota = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
		}
		writeGoogleError(w, d.status, name, "You exceeded your current quota, please check your plan and billing details.",
			map[string]any{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []any{map[string]string{"quotaId": quota}}},
			map[string]any{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": strconv.FormatFloat(delay.Seconds(), 'f', -1, 64) + "s"})
	case http.StatusServiceUnavailable:
		writeGoogleError(w, d.status, name, "The model is overloaded. Please try again later.")
	default:
		writeGoogleError(w, d.status, name, "Simulated error "+strconv.Itoa(d.status)+".")
	}
}
