package providers

import (
	"net"
	"net/http"
	"time"
)

// NewHTTPClient returns a client tuned for one upstream: a keep-alive pool sized for high
// concurrency (Go's default of 2 idle connections per host, and Caddy's 32, churn connections
// under load), no transparent decompression (the gateway asks for identity so it can meter
// streams byte for byte), and connect/first-byte timeouts. The client has no overall timeout:
// streams may run long and are bounded by the idle timeout instead.
func NewHTTPClient(t Timeouts) *http.Client {
	t = t.WithDefaults()
	dialer := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   t.Connect,
		ResponseHeaderTimeout: t.FirstByte,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return &http.Client{Transport: tr}
}
