package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// TestBaselineLeavesOutTheWorkspaceSalt: the baseline is what the caller's request would have
// cost sent directly, and a direct call carries no workspace salt. The same conversation with
// cache isolation on (salted) and off must show the same baseline, though the salted one costs
// the salt's tokens more.
func TestBaselineLeavesOutTheWorkspaceSalt(t *testing.T) {
	system := strings.Repeat("Answer as the support desk of a bank; cite the policy section. ", 120)
	body := `{"model":"anth/claude-sonnet-4-5","max_tokens":20,"messages":[{"role":"system","content":"` + system + `"},{"role":"user","content":"QUESTION"}]}`
	// One gateway at a time (the harness serialises them), each in its own subtest.
	run := func(isolation string) (cost, baseline [2]int64) {
		t.Run(isolation, func(t *testing.T) { cost, baseline = serveTwice(t, isolation, body) })
		return cost, baseline
	}
	saltedCost, saltedBase := run("workspace")
	plainCost, plainBase := run("off")
	for i := range 2 {
		saltCost := saltedCost[i] - plainCost[i]
		if saltCost <= 0 {
			t.Fatalf("call %d: the salted request does not cost more (%d vs %d µ$): no salt to leave out", i, saltedCost[i], plainCost[i])
		}
		// The salt's size is estimated and each figure is rounded to the micro-dollar: a few
		// micro-dollars apart at most (counting the salt, the baselines were ~24 apart).
		if d := saltedBase[i] - plainBase[i]; d > 4 || d < -4 {
			t.Fatalf("call %d: baseline %d µ$ salted vs %d µ$ without salt (the salt cost %d µ$)", i, saltedBase[i], plainBase[i], saltCost)
		}
		t.Logf("call %d: cost %d/%d µ$, baseline %d/%d µ$ (salted/plain)", i, saltedCost[i], plainCost[i], saltedBase[i], plainBase[i])
	}
}

// serveTwice sends body twice (two questions) through a gateway with the given cache
// isolation and returns each answer's cost and baseline in micro-dollars.
func serveTwice(t *testing.T, isolation, body string) (cost, baseline [2]int64) {
	sim := simulated.New(simulated.Options{})
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	tl := newTestLedger(t, 10*ledger.Credit)
	site := "\tbtl_auth\n\tbtl_meter\n\tbtl_optimize {\n\t\tcache_isolation " + isolation + "\n\t}\n\tbtl_route\n"
	base := startGateway(t, tl.withStorage(`btl {
		provider anth anthropic {
			base_url `+up.URL+`
			api_key sk-ant-operator
		}
	}`), site)
	for i, q := range []string{"first question", "second question"} {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(strings.Replace(body, "QUESTION", q, 1)))
		req.Header.Set("Authorization", "Bearer "+tl.ownerKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s call %d: status %d", isolation, i, resp.StatusCode)
		}
		cost[i], baseline[i] = int64(usdToMicros(t, resp.Header.Get("X-Btl-Cost-Usd"))), int64(usdToMicros(t, resp.Header.Get("X-Btl-Baseline-Usd")))
	}
	return cost, baseline
}
