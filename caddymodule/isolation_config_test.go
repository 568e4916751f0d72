package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestIsolationOptions: allow_file_uris, images and body_timeout parse into the app, and a
// prefix that would allow more than it says is refused with the file and line.
func TestIsolationOptions(t *testing.T) {
	out, err := adapt(t, `{
	btl {
		allow_file_uris ws_a gs://acme/shared/ file-abc
		allow_file_uris ws_a s3://acme-bucket/
		images {
			max_per_request 5
			max_bytes 4MB
			max_request_bytes 10MB
			timeout 3s
			allow_private_addresses
		}
		body_timeout 15s
	}
}
:8080 {
	btl_route
}
`)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			BTL App `json:"btl"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	app := cfg.Apps.BTL
	if got := strings.Join(app.AllowedProviderRefs("ws_a"), " "); got != "gs://acme/shared/ file-abc s3://acme-bucket/" {
		t.Errorf("allow_file_uris = %q", got)
	}
	if len(app.AllowedProviderRefs("ws_b")) != 0 {
		t.Error("another workspace inherited the allowance")
	}
	img := app.ImageLimits()
	if img.MaxImages != 5 || img.MaxBytes != 4_000_000 || img.MaxTotalBytes != 10_000_000 || img.Timeout.Seconds() != 3 || !img.AllowPrivate {
		t.Errorf("images = %+v", img)
	}
	if app.RequestBodyTimeout().Seconds() != 15 {
		t.Errorf("body_timeout = %v", app.RequestBodyTimeout())
	}

	for name, block := range map[string]string{
		"prefix without bucket slash": "allow_file_uris ws_a gs://acme",
		"prefix with dot-dot":         "allow_file_uris ws_a gs://acme/../",
		"allow without prefix":        "allow_file_uris ws_a",
		"bad image size":              "images {\n\t\tmax_bytes lots\n\t}",
		"unknown image option":        "images {\n\t\tmax_pixels 5\n\t}",
		"duplicate images":            "images {\n\t}\n\timages {\n\t}",
		"bad body timeout":            "body_timeout soon",
	} {
		_, err := adapt(t, "{\n\tbtl {\n\t"+block+"\n\t}\n}\n:8080 {\n\tbtl_route\n}\n")
		if err == nil || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%s: %v, want an error naming the file and line", name, err)
		}
	}
}
