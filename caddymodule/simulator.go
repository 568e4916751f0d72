package caddymodule

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// simulators holds the in-process simulated upstream across config reloads: a reload starts
// the new config before the old one stops, and streams on the old config may still be
// reading from it, so it lives until the last config using it is gone.
var simulators = caddy.NewUsagePool()

type simServer struct {
	srv *http.Server
	url string
}

func (s *simServer) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// acquireSimulator returns the base URL of the process's in-process simulator, starting it
// on a loopback port on first use.
func acquireSimulator() (string, error) {
	v, _, err := simulators.LoadOrNew("simulated", func() (caddy.Destructor, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: simulated.New(simulated.Options{}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		return &simServer{srv: srv, url: "http://" + ln.Addr().String() + "/v1"}, nil
	})
	if err != nil {
		return "", err
	}
	return v.(*simServer).url, nil
}

func releaseSimulator() { _, _ = simulators.Delete("simulated") }
