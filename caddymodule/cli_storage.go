package caddymodule

import "github.com/spf13/cobra"

// storageCommands are the workspace, key and credit commands; they need the ledger store.
func storageCommands() []*cobra.Command { return nil }
