package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
)

// TestAnthropicIngress: the official Anthropic SDK talks to the gateway's /v1/messages, and the
// request is served by an OpenAI-format upstream through the ordinary chat pipeline.
func TestAnthropicIngress(t *testing.T) {
	base, _, _ := simGateway(t)
	client := anthropic.NewClient(aoption.WithBaseURL(base), aoption.WithAPIKey(testKey), aoption.WithMaxRetries(0))
	params := anthropic.MessageNewParams{
		Model:     "btl-fast",
		MaxTokens: 256,
		System:    []anthropic.TextBlockParam{{Text: "You are terse."}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hello"))},
	}
	msg, err := client.Messages.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Role != "assistant" || len(msg.Content) == 0 || msg.Content[0].Text == "" || msg.StopReason != "end_turn" {
		t.Fatalf("message: %+v", msg)
	}
	if msg.Usage.InputTokens == 0 || msg.Usage.OutputTokens == 0 {
		t.Fatalf("usage: %+v", msg.Usage)
	}

	stream := client.Messages.NewStreaming(context.Background(), params)
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Content) == 0 || acc.Content[0].Text != msg.Content[0].Text || acc.StopReason != "end_turn" || acc.Usage.OutputTokens == 0 {
		t.Fatalf("streamed message: %+v", acc)
	}

	count, err := client.Messages.CountTokens(context.Background(), anthropic.MessageCountTokensParams{
		Model:    "btl-fast",
		Messages: params.Messages,
	})
	if err != nil || count.InputTokens <= 0 {
		t.Fatalf("count_tokens: %v %v", count, err)
	}

	// Errors come back in Anthropic's shape, which the SDK understands.
	_, err = client.Messages.New(context.Background(), anthropic.MessageNewParams{Model: "no-such-model", MaxTokens: 10,
		Messages: params.Messages})
	var apiErr *anthropic.Error
	if err == nil || !asAnthropicError(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(apiErr.Error(), "not_found_error") {
		t.Fatalf("unknown model: %v", err)
	}
	bad := anthropic.NewClient(aoption.WithBaseURL(base), aoption.WithAPIKey("btl_wrong"), aoption.WithMaxRetries(0))
	_, err = bad.Messages.New(context.Background(), params)
	if err == nil || !asAnthropicError(err, &apiErr) || apiErr.StatusCode != 401 || !strings.Contains(apiErr.Error(), "authentication_error") {
		t.Fatalf("bad key: %v", err)
	}
}

func asAnthropicError(err error, target **anthropic.Error) bool {
	return errorsAs(err, target)
}
