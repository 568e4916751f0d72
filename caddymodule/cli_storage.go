package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/badtheorylabs/btl-runtime/ledger"
)

// storageCommands are the workspace, key and credit commands. They open the storage that the
// config names, so they act on the same data as the running gateway.
func storageCommands() []*cobra.Command {
	var configFile, adapter string
	addConfigFlags := func(c *cobra.Command) {
		c.Flags().StringVarP(&configFile, "config", "c", "", "configuration file (default: ./Caddyfile)")
		c.Flags().StringVarP(&adapter, "adapter", "a", "", "name of the config adapter")
	}
	withStore := func(fn func(ctx context.Context, store ledger.Store) (any, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rs, err := storageFromConfig(configFile, adapter)
			if err != nil {
				return err
			}
			store, err := openStore(ctx, rs)
			if err != nil {
				return fmt.Errorf("opening %s storage: %w", rs.kind, err)
			}
			defer store.Close()
			out, err := fn(ctx, store)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(os.Stdout)
			return enc.Encode(out)
		}
	}

	workspace := &cobra.Command{Use: "workspace", Short: "Manage workspaces"}
	var wsName string
	var wsCredits float64
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a workspace and its owner key (printed once)",
		RunE: withStore(func(ctx context.Context, store ledger.Store) (any, error) {
			credits, err := dollarsToMicros(wsCredits)
			if err != nil {
				return nil, err
			}
			ws, secret, err := store.CreateWorkspace(ctx, wsName, credits)
			if err != nil {
				return nil, err
			}
			return map[string]any{"workspace_id": ws.ID, "name": ws.Name, "api_key": secret,
				"balance_usd": json.Number(ws.Balance().String())}, nil
		}),
	}
	addConfigFlags(create)
	create.Flags().StringVar(&wsName, "name", "", "workspace name")
	create.Flags().Float64Var(&wsCredits, "credits", 0, "initial credits (1 credit = $1)")
	workspace.AddCommand(create)

	keys := &cobra.Command{Use: "keys", Short: "Manage API keys"}
	var keyWS, keyName, keyScopes string
	var keyTTL time.Duration
	keyCreate := &cobra.Command{
		Use:   "create",
		Short: "Create an API key (printed once)",
		RunE: withStore(func(ctx context.Context, store ledger.Store) (any, error) {
			var scopes []ledger.Scope
			for _, s := range strings.Split(keyScopes, ",") {
				if s = strings.TrimSpace(s); s != "" {
					scopes = append(scopes, ledger.Scope(s))
				}
			}
			var exp *time.Time
			if keyTTL > 0 {
				t := time.Now().Add(keyTTL)
				exp = &t
			}
			k, secret, err := store.CreateKey(ctx, keyWS, ledger.KeySpec{Name: keyName, Scopes: scopes, ExpiresAt: exp})
			if err != nil {
				return nil, err
			}
			return map[string]any{"key_id": k.ID, "workspace_id": k.WorkspaceID, "api_key": secret, "scopes": k.Scopes}, nil
		}),
	}
	addConfigFlags(keyCreate)
	keyCreate.Flags().StringVar(&keyWS, "workspace", "", "workspace id")
	keyCreate.Flags().StringVar(&keyName, "name", "", "key name")
	keyCreate.Flags().StringVar(&keyScopes, "scopes", "inference", "comma-separated scopes: inference,usage:read,keys:write")
	keyCreate.Flags().DurationVar(&keyTTL, "expires-in", 0, "lifetime (e.g. 720h); 0 never expires")
	keys.AddCommand(keyCreate)

	credits := &cobra.Command{Use: "credits", Short: "Manage credits"}
	var grantWS, grantRef string
	var grantAmount float64
	grant := &cobra.Command{
		Use:   "grant",
		Short: "Grant credits to a workspace",
		RunE: withStore(func(ctx context.Context, store ledger.Store) (any, error) {
			amount, err := dollarsToMicros(grantAmount)
			if err != nil || amount <= 0 {
				return nil, fmt.Errorf("--amount must be a positive number of credits")
			}
			ref := grantRef
			if ref == "" {
				ref = fmt.Sprintf("cli-%d", time.Now().UnixNano())
			}
			applied, err := store.Grant(ctx, grantWS, amount, "cli", ref)
			if err != nil {
				return nil, err
			}
			bal, err := store.Balance(ctx, grantWS)
			if err != nil {
				return nil, err
			}
			return map[string]any{"workspace_id": grantWS, "applied": applied, "balance_usd": json.Number(bal.String())}, nil
		}),
	}
	addConfigFlags(grant)
	grant.Flags().StringVar(&grantWS, "workspace", "", "workspace id")
	grant.Flags().Float64Var(&grantAmount, "amount", 0, "credits to add (1 credit = $1)")
	grant.Flags().StringVar(&grantRef, "reference", "", "idempotency reference: the same reference grants once")
	credits.AddCommand(grant)

	return []*cobra.Command{workspace, keys, credits}
}

// dollarsToMicros converts a CLI amount; it rejects sub-micro-dollar precision.
func dollarsToMicros(v float64) (ledger.Micros, error) {
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v > 1e9 {
		return 0, fmt.Errorf("invalid amount %v", v)
	}
	return ledger.Micros(math.Round(v * 1e6)), nil
}

// storageFromConfig reads the btl app's storage from a config file, as the server would.
func storageFromConfig(configFile, adapter string) (resolvedStorage, error) {
	cfgJSON, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return resolvedStorage{}, err
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return resolvedStorage{}, err
	}
	var app App
	if raw, ok := cfg.Apps["btl"]; ok {
		if err := json.Unmarshal(raw, &app); err != nil {
			return resolvedStorage{}, err
		}
	}
	return resolveStorage(app.Storage, caddy.NewReplacer())
}
