package handlers

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// DefaultBodyTimeout bounds reading an authenticated request's body when the btl app sets
// no body_timeout: a 32 MB body at 1 MB/s still fits.
const DefaultBodyTimeout = 60 * time.Second

// bodyTimeouter is implemented by a Runtime that configures the body deadline.
type bodyTimeouter interface {
	RequestBodyTimeout() time.Duration
}

// deadlineBody sets a read deadline on the connection when the body is first read and clears
// it when the body ends, so a client that stops sending mid-body (slowloris) is cut off after
// the timeout instead of holding the connection, its goroutine and buffers forever, while the
// deadline bounds the body alone, not the answer streamed after it.
type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	once    sync.Once
	cleared bool
	mu      sync.Mutex
}

// withBodyDeadline wraps r.Body for requests that have one.
func withBodyDeadline(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	if r.Body == nil || r.Body == http.NoBody || timeout <= 0 {
		return
	}
	r.Body = &deadlineBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: timeout}
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	b.once.Do(func() {
		// ErrNotSupported (a writer that cannot reach the connection) leaves the server's own
		// timeouts in charge.
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	})
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.clear()
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			err = errBodyTimeout
		}
	}
	return n, err
}

func (b *deadlineBody) Close() error {
	b.clear()
	return b.ReadCloser.Close()
}

func (b *deadlineBody) clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.cleared {
		b.cleared = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}

// errBodyTimeout is what a body read returns once the deadline has passed.
var errBodyTimeout = errors.New("request body not received within the body timeout")
