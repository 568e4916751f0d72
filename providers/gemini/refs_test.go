package gemini

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// TestBuildRequestRefusesGSUnlessAllowed: the adapter itself never emits fileData for a gs://
// URL the context does not allow, whatever path reached it.
func TestBuildRequestRefusesGSUnlessAllowed(t *testing.T) {
	chat, err := providers.ParseCanonical([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"gs://acme/shared/cat.png"}}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = BuildRequest(context.Background(), chat, BuildOptions{})
	if pe, ok := err.(*providers.Error); !ok || pe.Status != 400 || !strings.Contains(pe.Param, "image_url") {
		t.Fatalf("without an allowance: %v, want a 400", err)
	}
	ctx := providers.WithAllowedRefs(context.Background(), []string{"gs://acme/shared/"})
	req, err := BuildRequest(ctx, chat, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(req)
	if !strings.Contains(string(b), `"fileUri":"gs://acme/shared/cat.png"`) {
		t.Errorf("allowed reference not sent as fileData: %s", b)
	}
}
