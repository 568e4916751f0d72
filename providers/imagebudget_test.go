package providers

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

// TestImageBudget: one request's image fetches share a budget: each URL is downloaded once
// however often the request is retried, and the count and total size are capped.
func TestImageBudget(t *testing.T) {
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		n, _ := strconv.Atoi(r.URL.Query().Get("kb"))
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, n<<10)...))
	}))
	defer srv.Close()
	code := func(err error) (int, string) {
		var e *Error
		if !errors.As(err, &e) {
			return 0, ""
		}
		return e.Status, e.Code
	}

	b := NewImageBudget(ImageLimits{AllowPrivate: true, MaxImages: 3, MaxTotalBytes: 1 << 20})
	ctx := WithImageBudget(context.Background(), b)
	// Three attempts of the same request (a retry and a failover) fetch each image once.
	for attempt := 0; attempt < 3; attempt++ {
		for _, u := range []string{"/a?kb=300", "/b?kb=300"} {
			if _, err := FetchImage(ctx, srv.URL+u, ImageLimits{}); err != nil {
				t.Fatalf("attempt %d %s: %v", attempt, u, err)
			}
		}
	}
	if n := gets.Load(); n != 2 {
		t.Errorf("%d downloads for 2 images over 3 attempts, want 2", n)
	}
	// The third image would pass 1 MiB in total: 413.
	if _, err := FetchImage(ctx, srv.URL+"/c?kb=500", ImageLimits{}); err == nil {
		t.Fatal("total size not enforced")
	} else if s, c := code(err); s != http.StatusRequestEntityTooLarge || c != "images_too_large" {
		t.Errorf("over the total: %d %s, want 413 images_too_large", s, c)
	}
	// A fourth distinct URL is over the count: 400, without a download.
	before := gets.Load()
	if _, err := FetchImage(ctx, srv.URL+"/d?kb=1", ImageLimits{}); err == nil {
		t.Fatal("image count not enforced")
	} else if s, c := code(err); s != http.StatusBadRequest || c != "too_many_images" {
		t.Errorf("over the count: %d %s, want 400 too_many_images", s, c)
	}
	if gets.Load() != before {
		t.Error("an image over the count was downloaded")
	}
	// data: URLs are the caller's own bytes: not fetched, not counted.
	if _, err := FetchImage(ctx, "data:image/gif;base64,R0lGODlh", ImageLimits{}); err != nil {
		t.Errorf("data URL under a spent budget: %v", err)
	}
	// The budget's own limits apply, so an adapter's looser ones cannot widen them.
	b2 := WithImageBudget(context.Background(), NewImageBudget(ImageLimits{AllowPrivate: true, MaxBytes: 1 << 10}))
	if _, err := FetchImage(b2, srv.URL+"/e?kb=2", ImageLimits{AllowPrivate: true, MaxBytes: 1 << 30}); err == nil {
		t.Error("per-image limit of the budget not applied")
	}
}
