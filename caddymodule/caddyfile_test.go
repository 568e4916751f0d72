package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func adapt(t *testing.T, cf string) ([]byte, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	return out, err
}

// TestGlobalOptionErrors: unknown and duplicate options are rejected with the file and line.
func TestGlobalOptionErrors(t *testing.T) {
	cases := map[string]string{
		"unknown option":         "btl {\n\tfrobnicate yes\n}",
		"duplicate provider":     "btl {\n\tprovider a openai_compatible {\n\t\tbase_url http://x/v1\n\t}\n\tprovider a openai_compatible {\n\t\tbase_url http://y/v1\n\t}\n}",
		"duplicate option":       "btl {\n\tprovider a openai_compatible {\n\t\tbase_url http://x/v1\n\t\tbase_url http://y/v1\n\t}\n}",
		"unknown provider type":  "btl {\n\tprovider a nosuch {\n\t}\n}",
		"unknown provider opt":   "btl {\n\tprovider a openai {\n\t\tregion us-east-1\n\t}\n}",
		"bad timeout":            "btl {\n\tprovider a openai {\n\t\tidle_timeout soon\n\t}\n}",
		"slug without cands":     "btl {\n\tmodel m {\n\t\tstrategy ordered\n\t}\n}",
		"bad candidate":          "btl {\n\tmodel m {\n\t\tcandidates justamodel\n\t}\n}",
		"bad strategy":           "btl {\n\tmodel m {\n\t\tcandidates a/b\n\t\tstrategy random\n\t}\n}",
		"weights mismatch":       "btl {\n\tmodel m {\n\t\tcandidates a/b c/d\n\t\tweights 1\n\t}\n}",
		"duplicate storage":      "btl {\n\tstorage sqlite a.db\n\tstorage sqlite b.db\n}",
		"bad storage":            "btl {\n\tstorage mysql x\n}",
		"payments without keys":  "btl {\n\tpayments stripe {\n\t\tbase_url http://x\n\t}\n}",
		"slash in provider name": "btl {\n\tprovider a/b openai {\n\t}\n}",
		"lease_ttl too short":    "btl {\n\tlease_ttl 10ms\n}",
		"lease_ttl not duration": "btl {\n\tlease_ttl soon\n}",
		"duplicate lease_ttl":    "btl {\n\tlease_ttl 5s\n\tlease_ttl 6s\n}",
		"misspelled model":       "btl {\n\tprovider sim simulated {\n\t\tmodels gpt-4o-mni\n\t}\n}",
		"misspelled candidate":   "btl {\n\tprovider sim simulated {\n\t}\n\tmodel m {\n\t\tcandidates sim/gpt-4o-mni\n\t}\n}",
		"unpriced local model":   "btl {\n\tprovider l openai_compatible {\n\t\tbase_url http://x/v1\n\t\tmodels llama-3.1-8b\n\t}\n}",
		"price without output":   "btl {\n\tprice x {\n\t\tinput 1\n\t}\n}",
		"price bad kind":         "btl {\n\tprice x {\n\t\tinput 1\n\t\toutput 1\n\t\tkind speech\n\t}\n}",
		"price negative":         "btl {\n\tprice x {\n\t\tinput -1\n\t\toutput 1\n\t}\n}",
	}
	for name, block := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := adapt(t, "{\n"+block+"\n}\n:8080 {\n\tbtl_route\n}\n")
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Fatalf("error does not name file and line: %v", err)
			}
		})
	}
}

func TestHandlerDirectiveErrors(t *testing.T) {
	for _, site := range []string{
		"btl_route {\n\t\tmax_body_bytes -1\n\t}",
		"btl_route {\n\t\tretries 99\n\t}",
		"btl_route {\n\t\tnope 1\n\t}",
		"btl_route extra",
		"btl_auth {\n\t\tx\n\t}",
		"btl_auth {\n\t\tcount_tokens_rpm 0\n\t}",
		"btl_auth {\n\t\tcount_tokens_rpm many\n\t}",
		"btl_auth {\n\t\tcount_tokens_rpm 5\n\t\tcount_tokens_rpm 6\n\t}",
		"btl_auth extra",
		"btl_meter {\n\t\tanonymous_workspace\n\t}",
		"btl_meter {\n\t\tdefault_output_reserve 0\n\t}",
	} {
		if _, err := adapt(t, "{\n\tbtl {\n\t}\n}\n:8080 {\n\t"+site+"\n}\n"); err == nil || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: %v", site, err)
		}
	}
}

// TestDirectiveOrder: written in any order, the four handlers run auth → meter → optimize →
// route, with no route {} block.
func TestDirectiveOrder(t *testing.T) {
	out, err := adapt(t, "{\n\tbtl {\n\t}\n}\n:8080 {\n\tbtl_route\n\tbtl_optimize\n\tbtl_meter\n\tbtl_auth\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	ia, im, io, ir := strings.Index(s, `"btl_auth"`), strings.Index(s, `"btl_meter"`), strings.Index(s, `"btl_optimize"`), strings.Index(s, `"btl_route"`)
	if ia < 0 || !(ia < im && im < io && io < ir) {
		t.Fatalf("order: %s", s)
	}
}

// TestAdaptRoundTrip: the Caddyfile and JSON forms are the same config — the adapted JSON
// unmarshals into the app and marshals back to the same JSON, and the Caddyfile's
// placeholders survive unexpanded (they are expanded at provision time).
func TestAdaptRoundTrip(t *testing.T) {
	cf := `{
	btl {
		storage postgres {env.BTL_DATABASE_URL}
		spool_dir /var/lib/btl/spool
		node_id node-1
		provider openai openai {
			api_key {env.OPENAI_API_KEY}
			models gpt-4o-mini gpt-4.1
			organization org-1
			first_byte_timeout 30s
		}
		provider local openai_compatible {
			base_url http://127.0.0.1:8000/v1
			optional
		}
		price llama {
			input 0.05
			output 0.08
		}
		model btl-fast {
			candidates openai/gpt-4o-mini local/llama
			strategy weighted
			weights 3 1
		}
		payments stripe {
			secret_key {env.STRIPE_KEY}
			webhook_secret {env.STRIPE_WHSEC}
		}
	}
	btl {
		model btl-second {
			candidates openai/gpt-4.1
		}
	}
}
:8080 {
	btl_auth {
		count_tokens_rpm 120
	}
	btl_meter {
		anonymous_workspace ws_local
	}
	btl_optimize {
		workspace ws_local {
			coalesce_sampled
		}
	}
	btl_route {
		retries 1
		deadline 30s
	}
}
`
	out, err := adapt(t, cf)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var app App
	if err := json.Unmarshal(cfg.Apps["btl"], &app); err != nil {
		t.Fatal(err)
	}
	again := caddyconfig.JSON(app, nil)
	var a, b any
	_ = json.Unmarshal(cfg.Apps["btl"], &a)
	_ = json.Unmarshal(again, &b)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("round trip differs:\n%s\n%s", ja, jb)
	}
	if len(app.Providers) != 2 || app.Providers[0].APIKey != "{env.OPENAI_API_KEY}" || app.Storage.DSN != "{env.BTL_DATABASE_URL}" {
		t.Fatalf("placeholders expanded at parse time or providers lost: %+v", app)
	}
	if len(app.Models) != 2 || app.Models[0].Weights[0] != 3 || app.PaymentsConfig == nil || app.Providers[0].Options["organization"] != "org-1" {
		t.Fatalf("parsed: %+v", app)
	}
	for _, want := range []string{`"anonymous_workspace":"ws_local"`, `"workspaces":{"ws_local":{"coalesce_sampled":true}}`, `"retries":1`, `"deadline":30000000000`, `"count_tokens_rpm":120`} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("missing %s in %s", want, out)
		}
	}
}

func TestTestDispenserGlobal(t *testing.T) {
	d := caddyfile.NewTestDispenser("btl {\n\tprice m1 {\n\t\tinput 0.1\n\t\toutput 0.2\n\t}\n\tprice m2 {\n\t\tinput 1\n\t\toutput 2\n\t\tkind embedding\n\t}\n\tprovider p simulated {\n\t\tmodels m1 m2\n\t}\n\tmodel s {\n\t\tcandidates p/m1\n\t}\n}")
	v, err := parseGlobal(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	var app App
	if err := json.Unmarshal(v.(httpcaddyfile.App).Value, &app); err != nil {
		t.Fatal(err)
	}
	if app.Providers[0].Name != "p" || len(app.Providers[0].Models) != 2 || app.Models[0].Candidates[0] != "p/m1" {
		t.Fatalf("%+v", app)
	}
}

// A misspelt upstream model is an error naming the file and the line of the misspelling (it
// used to pass and be billed as a longer-known model: sim/gpt-4o-mni as gpt-4o); priced
// explicitly, the same name is accepted.
func TestUnknownModelNamesFileAndLine(t *testing.T) {
	cf := "{\n\tbtl {\n\t\tprovider sim simulated {\n\t\t\tmodels gpt-4o-mini\n\t\t}\n\t\tmodel btl-fast {\n\t\t\tcandidates sim/gpt-4o-mini sim/gpt-4o-mni\n\t\t}\n\t}\n}\n:8080 {\n\tbtl_route\n}\n"
	_, err := adapt(t, cf)
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:7") || !strings.Contains(err.Error(), "'gpt-4o-mni'") ||
		!strings.Contains(err.Error(), "did you mean gpt-4o-mini") {
		t.Fatalf("%v", err)
	}
	priced := strings.Replace(cf, "\t\tprovider sim", "\t\tprice gpt-4o-mni {\n\t\t\tinput 0.15\n\t\t\toutput 0.6\n\t\t}\n\t\tprovider sim", 1)
	out, err := adapt(t, priced)
	if err != nil || !strings.Contains(string(out), `"model_prices":{"gpt-4o-mni":{"input":0.15`) {
		t.Fatalf("%v %s", err, out)
	}
}

// TestParseOptimizeResponseCache: the response cache is on by default (no configuration
// needed); `response_cache off` and `disable response_cache` turn it off; a block tunes it.
func TestParseOptimizeResponseCache(t *testing.T) {
	cases := []struct {
		name, block string
		want, not   []string // substrings of the handler's JSON
		err         bool
	}{
		{"bare", "btl_optimize", nil, []string{`"response_cache"`, `"disable"`}, false},
		{"off", "btl_optimize {\n\t\tresponse_cache off\n\t}", []string{`"disable":["response_cache"]`}, nil, false},
		{"disable", "btl_optimize {\n\t\tdisable response_cache\n\t}", []string{`"disable":["response_cache"]`}, nil, false},
		{"off with disable", "btl_optimize {\n\t\tresponse_cache off\n\t\tdisable dedupe\n\t}", []string{`"disable":["response_cache","dedupe"]`}, nil, false},
		{"block", "btl_optimize {\n\t\tresponse_cache {\n\t\t\tttl 1m\n\t\t\tmax_bytes 1048576\n\t\t\tsampled\n\t\t}\n\t}",
			[]string{`"response_cache":{"max_bytes":1048576,"sampled":true,"ttl":60000000000}`}, []string{`"disable"`}, false},
		{"on is not a word", "btl_optimize {\n\t\tresponse_cache on\n\t}", nil, nil, true},
		{"off with a block", "btl_optimize {\n\t\tresponse_cache off {\n\t\t\tttl 1m\n\t\t}\n\t}", nil, nil, true},
		{"off twice", "btl_optimize {\n\t\tresponse_cache off off\n\t}", nil, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := adapt(t, "{\n\tbtl {\n\t}\n}\n:8080 {\n\t"+c.block+"\n}\n")
			if c.err {
				if err == nil {
					t.Fatalf("accepted: %s", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("missing %s in %s", w, out)
				}
			}
			for _, n := range c.not {
				if strings.Contains(string(out), n) {
					t.Errorf("unexpected %s in %s", n, out)
				}
			}
		})
	}
}
