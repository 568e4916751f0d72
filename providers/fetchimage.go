package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ImageLimits bounds FetchImage. Zero values take the defaults.
type ImageLimits struct {
	// MaxBytes bounds the image size (default 20 MiB).
	MaxBytes int64
	// Timeout bounds the whole fetch, redirects included (default 10 s).
	Timeout time.Duration
	// AllowPrivate permits loopback, private, link-local and other non-public addresses.
	// Without it a caller could make the gateway read its own network (SSRF).
	AllowPrivate bool
}

func (l ImageLimits) withDefaults() ImageLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 20 << 20
	}
	if l.Timeout <= 0 {
		l.Timeout = 10 * time.Second
	}
	return l
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
func FetchImage(ctx context.Context, url string, limits ImageLimits) (*FetchedImage, error) {
	limits = limits.withDefaults()
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
	data, err := io.ReadAll(io.LimitReader(resp.Body, limits.MaxBytes+1))
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
