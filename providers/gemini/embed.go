package gemini

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"

	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/openai"
)

// Embeddings: the Gemini API's batchEmbedContents (one request per input, outputDimensionality
// for shorter vectors; it reports no token counts, so usage is estimated at four bytes a
// token) and Vertex's predict (instances of content, parameters.outputDimensionality; each
// prediction carries statistics.token_count).

type geminiEmbedRequest struct {
	Model                string        `json:"model"`
	Content              geminiContent `json:"content"`
	OutputDimensionality int           `json:"outputDimensionality,omitempty"`
}

type geminiContent struct {
	Parts []geminiText `json:"parts"`
}

type geminiText struct {
	Text string `json:"text"`
}

type vertexPredictRequest struct {
	Instances  []vertexInstance `json:"instances"`
	Parameters *vertexParams    `json:"parameters,omitempty"`
}

type vertexInstance struct {
	Content string `json:"content"`
}

type vertexParams struct {
	OutputDimensionality int `json:"outputDimensionality,omitempty"`
}

// Embed serves an OpenAI embeddings request with a Gemini or Vertex embedding model.
func (a *Adapter) Embed(ctx context.Context, call *providers.EmbedCall) (*providers.Response, error) {
	texts, perr := call.Request.Texts(a.cfg.Type)
	if perr != nil {
		return nil, perr
	}
	model, dims := call.UpstreamModel, call.Request.Dimensions
	m := url.PathEscape(model)
	var vectors [][]float32
	var tokens int64
	var body []byte
	var endpoint string
	if a.cfg.Type == TypeVertex {
		req := vertexPredictRequest{Instances: make([]vertexInstance, len(texts))}
		for i, t := range texts {
			req.Instances[i].Content = t
		}
		if dims > 0 {
			req.Parameters = &vertexParams{OutputDimensionality: dims}
		}
		body, _ = json.Marshal(req)
		endpoint = a.base + "/v1/projects/" + url.PathEscape(a.project) + "/locations/" + url.PathEscape(a.location) +
			"/publishers/google/models/" + m + ":predict"
	} else {
		reqs := make([]geminiEmbedRequest, len(texts))
		for i, t := range texts {
			reqs[i] = geminiEmbedRequest{Model: "models/" + model, Content: geminiContent{Parts: []geminiText{{Text: t}}}, OutputDimensionality: dims}
		}
		body, _ = json.Marshal(map[string]any{"requests": reqs})
		endpoint = a.base + "/v1beta/models/" + m + ":batchEmbedContents"
	}
	raw, rid, err := a.postJSON(ctx, endpoint, body)
	if err != nil {
		return nil, err
	}
	if a.cfg.Type == TypeVertex {
		var out struct {
			Predictions []struct {
				Embeddings struct {
					Values     []float32 `json:"values"`
					Statistics struct {
						TokenCount float64 `json:"token_count"`
					} `json:"statistics"`
				} `json:"embeddings"`
			} `json:"predictions"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, badResponse("the upstream response was not valid JSON", err)
		}
		for _, p := range out.Predictions {
			vectors = append(vectors, p.Embeddings.Values)
			tokens += int64(p.Embeddings.Statistics.TokenCount)
		}
	} else {
		var out struct {
			Embeddings []struct {
				Values []float32 `json:"values"`
			} `json:"embeddings"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, badResponse("the upstream response was not valid JSON", err)
		}
		for _, e := range out.Embeddings {
			vectors = append(vectors, e.Values)
		}
		for _, t := range texts {
			tokens += int64(len(t)+3) / 4
		}
	}
	if len(vectors) != len(texts) {
		return nil, badResponse("the upstream returned a different number of embeddings than inputs", nil)
	}
	usage := &providers.Usage{InputUncached: tokens}
	return &providers.Response{Status: http.StatusOK, UpstreamRequestID: rid, Usage: usage,
		Body: providers.MarshalEmbeddings(model, vectors, call.Request.EncodingFormat, tokens)}, nil
}

// postJSON posts body and returns a 2xx answer's bytes; a Vertex 401 refreshes the token once.
func (a *Adapter) postJSON(ctx context.Context, endpoint string, body []byte) ([]byte, string, error) {
	resp, cancel, err := a.post(ctx, endpoint, body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode == http.StatusUnauthorized && a.tokens != nil {
		resp.Body.Close()
		cancel()
		a.tokens.Invalidate()
		if resp, cancel, err = a.post(ctx, endpoint, body); err != nil {
			return nil, "", err
		}
	}
	defer cancel()
	defer resp.Body.Close()
	rid := resp.Header.Get("X-Request-Id")
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, rid, openai.TransportError(ctx, err)
	}
	if resp.StatusCode/100 != 2 {
		e := ParseError(resp.StatusCode, resp.Header, raw)
		e.UpstreamRequestID = rid
		return nil, rid, e
	}
	if len(raw) > maxBody {
		return nil, rid, badResponse("the upstream response was too large", nil)
	}
	return raw, rid, nil
}

// Interface guard
var _ providers.Embedder = (*Adapter)(nil)
