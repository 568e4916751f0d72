package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
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
	wsList := &cobra.Command{
		Use:   "list",
		Short: "List every workspace with its balance and rate limits",
		RunE: withStore(func(ctx context.Context, store ledger.Store) (any, error) {
			all, err := store.ListWorkspaces(ctx)
			if err != nil {
				return nil, err
			}
			data := make([]map[string]any, 0, len(all))
			for _, w := range all {
				data = append(data, map[string]any{"workspace_id": w.ID, "name": w.Name, "created_at": w.CreatedAt,
					"balance_usd": json.Number(w.Balance().String()), "granted_usd": json.Number(w.Granted.String()),
					"spent_usd": json.Number(w.Spent.String()), "rpm": w.Limits.RPM, "tpm": w.Limits.TPM})
			}
			return map[string]any{"object": "list", "data": data}, nil
		}),
	}
	addConfigFlags(wsList)
	workspace.AddCommand(wsList)

	keys := &cobra.Command{Use: "keys", Short: "Manage API keys"}
	var keyWS, keyName, keyScopes, keyModels, keyPeriod, keyID string
	var keyTTL time.Duration
	var keyRPM, keyTPM int64
	var keyBudget float64
	keyCreate := &cobra.Command{
		Use:   "create",
		Short: "Create an API key (printed once)",
		RunE: withStore(func(ctx context.Context, store ledger.Store) (any, error) {
			var exp *time.Time
			if keyTTL > 0 {
				t := time.Now().Add(keyTTL)
				exp = &t
			}
			budget, err := dollarsToMicros(keyBudget)
			if err != nil {
				return nil, fmt.Errorf("--budget: %w", err)
			}
			k, secret, err := store.CreateKey(ctx, keyWS, ledger.KeySpec{Name: keyName, Scopes: stringsToScopes(splitList(keyScopes)), ExpiresAt: exp,
				Limits: ledger.KeyLimits{Models: splitList(keyModels), RPM: keyRPM, TPM: keyTPM, BudgetMicros: budget, BudgetPeriod: keyPeriod}})
			if err != nil {
				return nil, err
			}
			out := cliKey(k)
			out["api_key"] = secret
			return out, nil
		}),
	}
	addConfigFlags(keyCreate)
	keyCreate.Flags().StringVar(&keyWS, "workspace", "", "workspace id")
	keyCreate.Flags().StringVar(&keyName, "name", "", "key name")
	keyCreate.Flags().StringVar(&keyScopes, "scopes", "inference", "comma-separated scopes: inference,usage:read,keys:write")
	keyCreate.Flags().DurationVar(&keyTTL, "expires-in", 0, "lifetime (e.g. 720h); 0 never expires")
	keyCreate.Flags().StringVar(&keyModels, "models", "", "comma-separated model allow-list: slugs, provider/model, provider/*")
	keyCreate.Flags().Int64Var(&keyRPM, "rpm", 0, "requests per minute (0: no limit)")
	keyCreate.Flags().Int64Var(&keyTPM, "tpm", 0, "tokens per minute (0: no limit)")
	keyCreate.Flags().Float64Var(&keyBudget, "budget", 0, "spend cap in dollars per --budget-period (0: none)")
	keyCreate.Flags().StringVar(&keyPeriod, "budget-period", "", "day, month or total (default total)")
	keys.AddCommand(keyCreate)

	keyList := &cobra.Command{
		Use:   "list",
		Short: "List a workspace's API keys (never their secrets)",
		RunE: withStore(func(ctx context.Context, store ledger.Store) (any, error) {
			all, err := store.ListKeys(ctx, keyWS)
			if err != nil {
				return nil, err
			}
			if len(all) == 0 { // every workspace has its owner key: no keys means no workspace
				if _, err := store.Workspace(ctx, keyWS); err != nil {
					return nil, fmt.Errorf("workspace %q: %w", keyWS, err)
				}
			}
			data := make([]map[string]any, 0, len(all))
			for _, k := range all {
				data = append(data, cliKey(k))
			}
			return map[string]any{"object": "list", "data": data}, nil
		}),
	}
	addConfigFlags(keyList)
	keyList.Flags().StringVar(&keyWS, "workspace", "", "workspace id")
	keys.AddCommand(keyList)

	keyRevoke := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke an API key and every key minted under it",
		RunE: withStore(func(ctx context.Context, store ledger.Store) (any, error) {
			if err := store.RevokeKey(ctx, keyWS, keyID); err != nil {
				if errors.Is(err, ledger.ErrLastOwnerKey) {
					return nil, fmt.Errorf("%w: create another owner key first (keys create --scopes inference,usage:read,keys:write)", err)
				}
				return nil, err
			}
			return map[string]any{"key_id": keyID, "workspace_id": keyWS, "revoked": true}, nil
		}),
	}
	addConfigFlags(keyRevoke)
	keyRevoke.Flags().StringVar(&keyWS, "workspace", "", "workspace id")
	keyRevoke.Flags().StringVar(&keyID, "key", "", "key id (key_…)")
	keys.AddCommand(keyRevoke)

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

// cliKey is a key as the CLI prints it (never its secret).
func cliKey(k ledger.Key) map[string]any {
	out := map[string]any{"key_id": k.ID, "workspace_id": k.WorkspaceID, "name": k.Name, "prefix": k.Prefix,
		"scopes": k.Scopes, "created_at": k.CreatedAt, "expires_at": k.ExpiresAt, "revoked_at": k.RevokedAt,
		"parent_id": k.ParentID, "models": k.Limits.Models, "rpm": k.Limits.RPM, "tpm": k.Limits.TPM}
	if k.Limits.BudgetMicros > 0 {
		out["budget_usd"] = json.Number(k.Limits.BudgetMicros.String())
		out["budget_period"] = k.Limits.BudgetPeriod
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func stringsToScopes(ss []string) []ledger.Scope {
	out := make([]ledger.Scope, len(ss))
	for i, s := range ss {
		out[i] = ledger.Scope(s)
	}
	return out
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
