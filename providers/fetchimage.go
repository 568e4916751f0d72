package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ImageLimits bounds FetchImage. Zero values take the defaults.
type ImageLimits struct {
	// MaxBytes bounds one image's size (default 20 MiB).
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// Timeout bounds one fetch, redirects included (default 10 s).
	Timeout time.Duration `json:"timeout,omitempty"`
	// AllowPrivate permits loopback, private, link-local and other non-public addresses.
	// Without it a caller could make the gateway read its own network (SSRF).
	AllowPrivate bool `json:"allow_private_addresses,omitempty"`
	// MaxImages bounds how many image URLs one request may have fetched (default 20, Bedrock's
	// own limit). Only an ImageBudget enforces it.
	MaxImages int `json:"max_per_request,omitempty"`
	// MaxTotalBytes bounds the bytes of all images fetched for one request (default 20 MiB,
	// Gemini's limit on inline data). Only an ImageBudget enforces it.
	MaxTotalBytes int64 `json:"max_request_bytes,omitempty"`
}

func (l ImageLimits) withDefaults() ImageLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 20 << 20
	}
	if l.Timeout <= 0 {
		l.Timeout = 10 * time.Second
	}
	if l.MaxImages <= 0 {
		l.MaxImages = 20
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = 20 << 20
	}
	return l
}

// ImageBudget is one request's allowance for inlined images, shared by every attempt of that
// request: each URL is downloaded once (a retry or a failover to another upstream reuses the
// bytes), at most MaxImages URLs are fetched, and at most MaxTotalBytes in all. Without it a
// 2 KB request naming 20 large images made a 533 MiB upstream body, downloaded again on every
// retry. Safe for concurrent use.
type ImageBudget struct {
	limits  ImageLimits
	mu      sync.Mutex
	used    int64
	fetched map[string]imageResult
}

type imageResult struct {
	img *FetchedImage
	err error
}

// NewImageBudget returns a budget with limits (zero values take the defaults).
func NewImageBudget(limits ImageLimits) *ImageBudget {
	return &ImageBudget{limits: limits.withDefaults(), fetched: map[string]imageResult{}}
}

type imageBudgetKey struct{}

// WithImageBudget makes FetchImage calls under ctx draw on b, with b's limits.
func WithImageBudget(ctx context.Context, b *ImageBudget) context.Context {
	return context.WithValue(ctx, imageBudgetKey{}, b)
}

func (b *ImageBudget) fetch(ctx context.Context, url string) (*FetchedImage, error) {
	b.mu.Lock()
	defer b.mu.Unlock() // one request's fetches are sequential anyway; this keeps them once each
	if r, ok := b.fetched[url]; ok {
		return r.img, r.err
	}
	if len(b.fetched) >= b.limits.MaxImages {
		return nil, Errorf(http.StatusBadRequest, "too_many_images", "",
			"a request may reference at most %d image URLs for this model; send fewer, or inline them as data: URLs", b.limits.MaxImages)
	}
	remaining := b.limits.MaxTotalBytes - b.used
	if remaining <= 0 {
		return nil, Errorf(http.StatusRequestEntityTooLarge, "images_too_large", "",
			"the images of this request exceed %d bytes in total", b.limits.MaxTotalBytes)
	}
	limits := b.limits
	limits.MaxBytes = min(limits.MaxBytes, remaining)
	img, err := fetchImage(ctx, url, limits)
	if pe, ok := err.(*Error); ok && pe.Code == "image_too_large" && remaining < b.limits.MaxBytes {
		err = Errorf(http.StatusRequestEntityTooLarge, "images_too_large", "",
			"the images of this request exceed %d bytes in total", b.limits.MaxTotalBytes)
	}
	if err == nil {
		b.used += int64(len(img.Data))
	}
	if ctx.Err() == nil {
		b.fetched[url] = imageResult{img, err} // a fetch cut short by this attempt may be retried
	}
	return img, err
}

// FetchedImage is an image's bytes and media type.
type FetchedImage struct {
	MediaType string
	Data      []byte
}

// ErrPrivateAddress is returned when an image URL resolves to a non-public address.
var ErrPrivateAddress = errors.New("image URL resolves to a non-public address")

// FetchImage returns the bytes of an image_url: a data: URL is decoded, an http(s) URL is
// downloaded within the limits. The address check runs in the dialer's Control function on the
// IP actually connected to, so DNS rebinding and redirects to internal hosts are refused too,
// and no proxy is used (it would hide the target address). Errors are 400 *Error values that
// name the problem without echoing response bodies.
//
// When ctx carries an ImageBudget (WithImageBudget), http(s) URLs are fetched through it, with
// its limits instead of limits.
func FetchImage(ctx context.Context, url string, limits ImageLimits) (*FetchedImage, error) {
	if b, ok := ctx.Value(imageBudgetKey{}).(*ImageBudget); ok && b != nil {
		if _, _, isData := ParseDataURL(url); !isData {
			return b.fetch(ctx, url)
		}
	}
	return fetchImage(ctx, url, limits.withDefaults())
}

func fetchImage(ctx context.Context, url string, limits ImageLimits) (*FetchedImage, error) {
	if media, b64, ok := ParseDataURL(url); ok {
		if int64(len(b64))*3/4 > limits.MaxBytes {
			return nil, Errorf(http.StatusBadRequest, "image_too_large", "", "image is larger than %d bytes", limits.MaxBytes)
		}
		data, err := DecodeBase64(b64)
		if err != nil {
			return nil, Errorf(http.StatusBadRequest, "invalid_image", "", "image data URL is not valid base64")
		}
		return &FetchedImage{MediaType: media, Data: data}, nil
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, Errorf(http.StatusBadRequest, "invalid_image_url", "", "image URL must be a data: URL or an http(s) URL")
	}
	ctx, cancel := context.WithTimeout(ctx, limits.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, "invalid_image_url", "", "image URL is not valid")
	}
	req.Header.Set("Accept", "image/*")
	resp, err := imageClient(limits.AllowPrivate).Do(req)
	if err != nil {
		if errors.Is(err, ErrPrivateAddress) {
			return nil, Errorf(http.StatusBadRequest, "invalid_image_url", "", "image URL points to a non-public address")
		}
		if ctx.Err() != nil {
			return nil, Errorf(http.StatusBadRequest, "image_fetch_failed", "", "image download timed out")
		}
		return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "image_fetch_failed",
			Message: "the image URL could not be downloaded", Internal: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, Errorf(http.StatusBadRequest, "image_fetch_failed", "", "downloading the image returned HTTP %d", resp.StatusCode)
	}
	if resp.ContentLength > limits.MaxBytes {
		return nil, Errorf(http.StatusBadRequest, "image_too_large", "", "image is larger than %d bytes", limits.MaxBytes)
	}
	// Read into a buffer sized from Content-Length (never beyond the cap), so memory stays
	// bounded by the limit whatever the server claims or sends.
	buf := bytes.NewBuffer(make([]byte, 0, min(max(resp.ContentLength, 0), limits.MaxBytes)+1))
	_, err = io.Copy(buf, io.LimitReader(resp.Body, limits.MaxBytes+1))
	data := buf.Bytes()
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "image_fetch_failed",
			Message: "the image download failed", Internal: err}
	}
	if int64(len(data)) > limits.MaxBytes {
		return nil, Errorf(http.StatusBadRequest, "image_too_large", "", "image is larger than %d bytes", limits.MaxBytes)
	}
	media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if !strings.HasPrefix(media, "image/") {
		media = http.DetectContentType(data)
		if i := strings.IndexByte(media, ';'); i >= 0 {
			media = media[:i]
		}
	}
	if !strings.HasPrefix(media, "image/") {
		return nil, Errorf(http.StatusBadRequest, "invalid_image", "", "the URL did not return an image")
	}
	return &FetchedImage{MediaType: media, Data: data}, nil
}

var publicImageClient, privateImageClient = newImageClient(false), newImageClient(true)

func imageClient(allowPrivate bool) *http.Client {
	if allowPrivate {
		return privateImageClient
	}
	return publicImageClient
}

func newImageClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if !allowPrivate {
		d.Control = refusePrivate
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return nil
	}}
}

// refusePrivate is a net.Dialer Control function: it runs after name resolution, on the
// address about to be connected.
func refusePrivate(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPrivateAddress, err)
	}
	if !IsPublicAddr(ap.Addr()) {
		return ErrPrivateAddress
	}
	return nil
}

// IsPublicAddr reports whether ip is a globally routable unicast address.
func IsPublicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64 can reach IPv4 private space
	netip.MustParsePrefix("2001:db8::/32"),
}
