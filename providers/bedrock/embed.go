package bedrock

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/openai"
)

// Embeddings on Bedrock go through InvokeModel (POST /model/{id}/invoke) in each vendor's own
// body: Titan Text Embeddings take one inputText per call, Cohere Embed takes up to 96 texts.
// Both answer with float vectors, which are turned into an OpenAI embeddings list.

// titanDimensions are the sizes Titan Text Embeddings V2 can produce natively.
var titanDimensions = map[int]bool{256: true, 512: true, 1024: true}

// cohereMaxTexts is Cohere Embed's limit of texts per call on Bedrock.
const cohereMaxTexts = 96

// Embed serves an OpenAI embeddings request with a Titan or Cohere embedding model.
func (a *Adapter) Embed(ctx context.Context, call *providers.EmbedCall) (*providers.Response, error) {
	texts, perr := call.Request.Texts("Bedrock")
	if perr != nil {
		return nil, perr
	}
	model, dims := call.UpstreamModel, call.Request.Dimensions
	var vectors [][]float32
	var tokens int64
	var rid string
	switch {
	case strings.Contains(model, "titan-embed"):
		v2 := strings.Contains(model, "titan-embed-text-v2")
		if dims > 0 && !(v2 && titanDimensions[dims]) {
			return nil, providers.Errorf(http.StatusBadRequest, "unsupported_value", "dimensions",
				"%s produces 256, 512 or 1024 dimensions (V2 only), not %d", model, dims)
		}
		for _, text := range texts {
			req := map[string]any{"inputText": text}
			if dims > 0 {
				req["dimensions"] = dims
			}
			var out struct {
				Embedding           []float32 `json:"embedding"`
				InputTextTokenCount int64     `json:"inputTextTokenCount"`
			}
			id, _, err := a.invoke(ctx, model, req, &out)
			if err != nil {
				return nil, err
			}
			if len(out.Embedding) == 0 {
				return nil, badResponse("the upstream returned no embedding", nil)
			}
			vectors, tokens, rid = append(vectors, out.Embedding), tokens+out.InputTextTokenCount, id
		}
	case strings.Contains(model, "cohere.embed") || strings.HasPrefix(model, "embed-"):
		if dims > 0 {
			return nil, providers.Errorf(http.StatusBadRequest, "unsupported_value", "dimensions",
				"%s has a fixed vector size; leave dimensions out", model)
		}
		for start := 0; start < len(texts); start += cohereMaxTexts {
			batch := texts[start:min(start+cohereMaxTexts, len(texts))]
			var out struct {
				Embeddings [][]float32 `json:"embeddings"`
			}
			id, hdr, err := a.invoke(ctx, model, map[string]any{"texts": batch, "input_type": "search_document"}, &out)
			if err != nil {
				return nil, err
			}
			if len(out.Embeddings) != len(batch) {
				return nil, badResponse("the upstream returned a different number of embeddings than inputs", nil)
			}
			// Cohere's body has no token count; Bedrock reports it in a header.
			n, _ := strconv.ParseInt(hdr.Get("X-Amzn-Bedrock-Input-Token-Count"), 10, 64)
			vectors, tokens, rid = append(vectors, out.Embeddings...), tokens+n, id
		}
	default:
		return nil, providers.Errorf(http.StatusBadRequest, "unsupported_value", "model",
			"%s is not a Bedrock embedding model this gateway can call (Titan Text Embeddings or Cohere Embed)", model)
	}
	body := providers.MarshalEmbeddings(model, vectors, call.Request.EncodingFormat, tokens)
	return &providers.Response{Status: http.StatusOK, Body: body, UpstreamRequestID: rid,
		Usage: &providers.Usage{InputUncached: tokens}}, nil
}

// invoke signs and posts one InvokeModel call and decodes its JSON answer into out.
func (a *Adapter) invoke(ctx context.Context, model string, in any, out any) (string, http.Header, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return "", nil, configError(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.endpoint(model, "invoke").String(), bytes.NewReader(body))
	if err != nil {
		return "", nil, configError(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Accept-Encoding", "identity")
	if err := a.signer.Sign(req, body); err != nil {
		return "", nil, configError(err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return "", nil, openai.TransportError(ctx, err)
	}
	defer resp.Body.Close()
	rid := resp.Header.Get("X-Amzn-Requestid")
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return "", nil, openai.TransportError(ctx, err)
	}
	if resp.StatusCode/100 != 2 {
		e := ParseError(resp.StatusCode, resp.Header, raw)
		e.UpstreamRequestID = rid
		return "", nil, e
	}
	if len(raw) > maxBody {
		return "", nil, badResponse("the upstream response was too large", nil)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return "", nil, badResponse("the upstream response was not valid JSON", err)
	}
	return rid, resp.Header, nil
}

// Interface guard
var _ providers.Embedder = (*Adapter)(nil)
