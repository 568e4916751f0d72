package caddymodule

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "btl",
		Usage: "<simulate|workspace|keys|credits> …",
		Short: "BTL Runtime tools: the simulated upstream, workspaces, keys and credits",
		Long: `Tools for the BTL Runtime gateway. Output is JSON on stdout.

  caddy btl simulate --listen 127.0.0.1:9999
      serve the simulated OpenAI-compatible upstream`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(simulateCommand())
			for _, c := range storageCommands() {
				cmd.AddCommand(c)
			}
		},
	})
}

func simulateCommand() *cobra.Command {
	var (
		listen     string
		latency    time.Duration
		chunkDelay time.Duration
		chunks     int
	)
	c := &cobra.Command{
		Use:   "simulate",
		Short: "Serve the simulated OpenAI-compatible upstream",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(os.Stderr, "simulated upstream on http://%s/v1\n", listen)
			return simulated.ListenAndServe(ctx, listen, simulated.Options{
				Latency: latency, ChunkDelay: chunkDelay, ChunksPerAnswer: chunks,
			})
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:9999", "address to listen on")
	c.Flags().DurationVar(&latency, "latency", 0, "delay before response headers")
	c.Flags().DurationVar(&chunkDelay, "chunk-delay", 0, "delay between stream chunks")
	c.Flags().IntVar(&chunks, "chunks", 8, "content chunks per streamed answer")
	return c
}
