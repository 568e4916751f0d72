package caddymodule

// Process-level regression tests for the storage layer's money guarantees (issue 13 items
// 1–6): the real binary, PostgreSQL behind a TCP proxy that cuts or stalls it, two nodes,
// a full spool filesystem and reloads under load. Each ends with ledgertest.Check.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/ledger/ledgertest"
	"github.com/badtheorylabs/btl-runtime/providers"
	"github.com/badtheorylabs/btl-runtime/providers/catalog"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// catalogPrice is what a row should cost: its usage at the embedded catalog's price.
func catalogPrice(r ledger.Row) (ledger.Micros, bool) {
	p, ok := catalog.Default().Lookup(r.UpstreamModel)
	if !ok {
		return 0, r.UpstreamModel == "" && r.Usage == (ledger.Usage{}) // no upstream call: free
	}
	return ledger.Micros(p.Cost(providers.Usage{InputUncached: r.InputUncached, CacheRead: r.CacheRead,
		CacheWrite5m: r.CacheWrite5m, CacheWrite1h: r.CacheWrite1h, Output: r.Output, Reasoning: r.Reasoning})), true
}

// checkInvariants runs the invariant checker and fails the test on any violation.
func checkInvariants(t *testing.T, store ledger.Store, acked map[string][]ledgertest.Ack, workspaces ...string) *ledgertest.Report {
	t.Helper()
	rep, err := ledgertest.Check(context.Background(), store, ledgertest.Options{Workspaces: workspaces, Acked: acked, Price: catalogPrice})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("money invariants broken: %v", rep)
	}
	return rep
}

// answer is one chat call's outcome, body read in full.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (a answer) id() string { return a.header.Get("X-Btl-Request-Id") }

// ack is the checker's record of a 200 (cost as the header told it).
func (a answer) ack(t *testing.T) ledgertest.Ack {
	return ledgertest.Ack{RequestID: a.id(), Cost: usdToMicros(t, a.header.Get("X-Btl-Cost-Usd"))}
}

func chatCall(client *http.Client, base, key, body string) answer {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode == 200 && !json.Valid(raw) {
		err = fmt.Errorf("incomplete body")
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: raw, err: err}
}

// uniqueBody is a chat request no other request shares (the coalescer and response cache
// never merge two of them), with a prompt of about promptBytes.
func uniqueBody(tag string, i, promptBytes, maxTokens int) string {
	filler := strings.Repeat("lorem ipsum dolor sit amet ", max(promptBytes/27, 1))
	return fmt.Sprintf(`{"model":"btl-fast","max_tokens":%d,"messages":[{"role":"user","content":"%s %d %s"}]}`, maxTokens, tag, i, filler)
}

// stall makes the proxy black-hole traffic (no RST): open connections stop moving and new
// ones connect but get no answer.
func (p *pgProxy) stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = on
	if !on && p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
	if on && p.resume == nil {
		p.resume = make(chan struct{})
	}
}

// waitIfStalled blocks while the proxy is stalled.
func (p *pgProxy) waitIfStalled() {
	p.mu.Lock()
	ch := p.resume
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// startProcAdmin runs the gateway with its admin endpoint on, for reloads; it returns the
// process, the admin URL and the site's port.
func startProcAdmin(t *testing.T, dir, btlBlock string) (*gatewayProc, string, int) {
	t.Helper()
	adminPort, port := freePort(t), freePort(t)
	p := launchProc(t, dir, procCaddyfile(adminPort, port, btlBlock), port)
	return p, fmt.Sprintf("http://127.0.0.1:%d", adminPort), port
}

// openPG makes a fresh schema and opens the store on it.
func openPG(t *testing.T) (string, *ledger.Postgres) {
	t.Helper()
	dsn := pgSchema(t)
	store, err := ledger.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return dsn, store
}

func procCaddyfile(adminPort, port int, btlBlock string) string {
	admin := "admin off"
	if adminPort > 0 {
		admin = fmt.Sprintf("admin 127.0.0.1:%d", adminPort)
	}
	return fmt.Sprintf("{\n\t%s\n\tpersist_config off\n\tlog {\n\t\tlevel WARN\n\t}\n\t%s\n}\nhttp://127.0.0.1:%d {\n%s\n}\n", admin, btlBlock, port, fullChain)
}

// reload posts a new Caddyfile to the admin endpoint.
func reload(t *testing.T, admin, caddyfile string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, admin+"/load", strings.NewReader(caddyfile))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("reload: %d %s", resp.StatusCode, b)
	}
}

func btlBlockTTL(storage, spool, node, upstream, ttl string) string {
	return strings.Replace(btlBlockFor(storage, spool, node, upstream), "node_id "+node, "node_id "+node+"\n\t\tlease_ttl "+ttl, 1)
}

// TestMoneyPartitionLongerThanLease (issue 13 item 1): node A loses PostgreSQL and serves
// from its lease, its rows spooled, for three times the lease's TTL; node B then spends
// what it can. Once A is back and its rows are in, nothing was spent twice.
func TestMoneyPartitionLongerThanLease(t *testing.T) {
	dsn, store := openPG(t)
	dir := t.TempDir()
	ctx := context.Background()
	proxy := newPGProxy(t, "127.0.0.1:5432")
	proxied := strings.Replace(dsn, "127.0.0.1:5432", proxy.ln.Addr().String(), 1)
	up := simUpstream(t)
	a := startProc(t, dir, btlBlockTTL("postgres "+proxied, filepath.Join(dir, "spool-a"), "node-a", up, "1s"))
	b := startProc(t, dir, btlBlockTTL("postgres "+dsn, filepath.Join(dir, "spool-b"), "node-b", up, "1s"))
	ws, key, err := store.CreateWorkspace(ctx, "partition", 2*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	// ~40 KB prompts: about $0.03 each, so a $1 lease is some thirty requests.
	const prompt = 40 << 10
	acked := map[string][]ledgertest.Ack{}
	client := &http.Client{Timeout: 20 * time.Second}
	send := func(node *gatewayProc, tag string, i int) answer {
		ans := chatCall(client, node.base, key, uniqueBody(tag, i, prompt, 10))
		if ans.err == nil && ans.status == 200 {
			acked[ws.ID] = append(acked[ws.ID], ans.ack(t))
		}
		return ans
	}
	if ans := send(a, "warm", 0); ans.status != 200 {
		t.Fatalf("warm-up: %d %s %v", ans.status, ans.body, ans.err)
	}
	proxy.setDown(true)
	servedA := 0
	for i := range 200 {
		if ans := send(a, "a", i); ans.status == 200 {
			servedA++
		} else {
			break
		}
	}
	time.Sleep(3 * time.Second) // A's lease expired in the database long ago
	servedB := 0
	for i := range 200 {
		ans := send(b, "b", i)
		if ans.status != 200 {
			break // B has spent what A does not hold
		}
		servedB++
	}
	proxy.setDown(false)
	waitAcked(t, store, ws.ID, ackIDs(acked[ws.ID]), 30*time.Second)
	rep := checkInvariants(t, store, acked, ws.ID)
	if servedA < 5 {
		t.Fatalf("A served %d from its lease while cut off: the scenario did not happen", servedA)
	}
	t.Logf("A served %d from its lease while cut off, B %d after A's lease expired; %v", servedA, servedB, rep)
}

func ackIDs(acks []ledgertest.Ack) []string {
	ids := make([]string, len(acks))
	for i, a := range acks {
		ids[i] = a.RequestID
	}
	return ids
}

var reservedRE = regexp.MustCompile(`up to \$([0-9]+\.[0-9]{6})`)

// TestMoneySmallBalanceServesTwoNodes (issue 13 item 2): a balance far below the minimum
// lease, requests alternating between two nodes: no 402 while the workspace can still pay
// the request's reservation.
func TestMoneySmallBalanceServesTwoNodes(t *testing.T) {
	dsn, store := openPG(t)
	dir := t.TempDir()
	ctx := context.Background()
	up := simUpstream(t)
	nodes := []*gatewayProc{
		startProc(t, dir, btlBlockFor("postgres "+dsn, filepath.Join(dir, "spool-a"), "node-a", up)),
		startProc(t, dir, btlBlockFor("postgres "+dsn, filepath.Join(dir, "spool-b"), "node-b", up)),
	}
	grant := 4000 * ledger.Micros(100) // $0.40
	ws, key, err := store.CreateWorkspace(ctx, "small", grant)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string][]ledgertest.Ack{}
	var spent ledger.Micros
	falseRefusals, served := 0, 0
	for i := range 400 {
		ans := chatCall(http.DefaultClient, nodes[i%2].base, key, uniqueBody("small", i, 2000, 200))
		switch {
		case ans.err != nil:
			t.Fatal(ans.err)
		case ans.status == 200:
			a := ans.ack(t)
			acked[ws.ID] = append(acked[ws.ID], a)
			spent += a.Cost
			served++
		case ans.status == http.StatusPaymentRequired:
			m := reservedRE.FindSubmatch(ans.body)
			if m == nil {
				t.Fatalf("402 without the reservation: %s", ans.body)
			}
			if grant-spent >= usdToMicros(t, string(m[1])) {
				falseRefusals++
			}
		default:
			t.Fatalf("status %d: %s", ans.status, ans.body)
		}
		if grant-spent < grant/50 {
			break
		}
	}
	waitAcked(t, store, ws.ID, ackIDs(acked[ws.ID]), 20*time.Second)
	rep := checkInvariants(t, store, acked, ws.ID)
	if falseRefusals > 0 {
		t.Fatalf("%d requests refused with 402 while the workspace could pay them (%d served, spent %s of %s)", falseRefusals, served, spent, grant)
	}
	t.Logf("alternating over two nodes on %s: %d served, no false 402; %v", grant, served, rep)
}

// countingUpstream is the simulator, counting chat completions that reach it.
func countingUpstream(t *testing.T) (string, *atomic.Int64) {
	var n atomic.Int64
	sim := simulated.New(simulated.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/chat/completions") {
			n.Add(1)
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1", &n
}

// mountTmpfs mounts a small tmpfs at dir (root only), unmounted at the end of the test.
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := execMount(dir, size); err != nil {
		t.Skipf("mounting a tmpfs needs root: %v %s", err, out)
	}
	t.Cleanup(func() { _ = execUmount(dir) })
}

func execMount(dir, size string) ([]byte, error) {
	return exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
}

func execUmount(dir string) error { return exec.Command("umount", "-l", dir).Run() }

// fillDisk writes a file in dir until the filesystem is full, leaving about keep bytes.
func fillDisk(t *testing.T, dir string, keep int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if free > keep {
		if _, err := f.Write(make([]byte, free-keep)); err != nil {
			t.Logf("filling the disk: %v", err)
		}
	}
	return path
}

// TestMoneyFullSpoolRefusesBeforeUpstream (issue 13 item 3): the spool lives on a small
// tmpfs that fills up, at start and while serving. Every request is either served and
// billed, or refused with 503 and Retry-After before the upstream is called; once space
// comes back, requests are served again.
func TestMoneyFullSpoolRefusesBeforeUpstream(t *testing.T) {
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool-fs")
	mountTmpfs(t, spool, "2m")
	up, calls := countingUpstream(t)
	db := filepath.Join(dir, "btl.db")
	store, err := ledger.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	ws, key, err := store.CreateWorkspace(context.Background(), "full", 100*ledger.Credit)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Full at start: only a few KB left, less than the writer preallocates.
	filler := fillDisk(t, spool, 16<<10)
	gw := startProc(t, dir, btlBlockFor("sqlite "+db, filepath.Join(spool, "s"), "node-f", up))
	acked := map[string][]ledgertest.Ack{}
	var served, refused int
	try := func(i int) answer {
		before := calls.Load()
		ans := chatCall(http.DefaultClient, gw.base, key, uniqueBody("full", i, 200, 20))
		switch {
		case ans.err != nil:
			t.Fatal(ans.err)
		case ans.status == 200:
			served++
			acked[ws.ID] = append(acked[ws.ID], ans.ack(t))
		case ans.status == http.StatusServiceUnavailable:
			refused++
			if calls.Load() != before {
				t.Fatalf("a refused request reached the upstream")
			}
			if ans.header.Get("Retry-After") == "" || !bytes.Contains(ans.body, []byte("cannot record usage")) {
				t.Fatalf("503 without Retry-After or reason: %v %s", ans.header, ans.body)
			}
		default:
			t.Fatalf("status %d: %s", ans.status, ans.body)
		}
		return ans
	}
	for i := range 5 {
		if ans := try(i); ans.status != http.StatusServiceUnavailable {
			t.Fatalf("full disk at start: %d", ans.status)
		}
	}
	// Space back: served again. Then the disk fills while serving.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if ans := try(5); ans.status != 200 {
		t.Fatalf("after space came back: %d %s", ans.status, ans.body)
	}
	fillDisk(t, spool, 4<<10)
	i := 6
	for ; i < 20000 && refused < 10; i++ {
		try(i)
	}
	if refused < 10 {
		t.Fatalf("the spool never filled up (%d served)", served)
	}
	if got := calls.Load(); got != int64(served) {
		t.Fatalf("upstream saw %d calls for %d served requests", got, served)
	}
	gw.stop()
	store2, err := ledger.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store2.Close()
	rep := checkInvariants(t, store2, acked, ws.ID)
	t.Logf("full spool: %d served and billed, %d refused before the upstream; %v", served, refused, rep)
}

// TestMoneyStorageReloadDrainsStreams (issue 13 item 4): streams are in flight when a reload
// moves the spool; each finishes and is billed. A reload that only rotates the database
// credentials is an ordinary reload.
func TestMoneyStorageReloadDrainsStreams(t *testing.T) {
	dsn, store := openPG(t)
	dir := t.TempDir()
	ctx := context.Background()
	ws, key, err := store.CreateWorkspace(ctx, "reload", 100*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	slow := httptest.NewServer(simulated.New(simulated.Options{ChunkDelay: 250 * time.Millisecond}))
	t.Cleanup(slow.Close)
	block := func(spool, dsn string) string {
		return btlBlockFor("postgres "+dsn, filepath.Join(dir, spool), "node-r", slow.URL+"/v1")
	}
	gw, admin, port := startProcAdmin(t, dir, block("spool-1", dsn))
	const streams = 16
	var mu sync.Mutex
	acked := map[string][]ledgertest.Ack{}
	var wg sync.WaitGroup
	started := make(chan struct{}, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"model":"btl-fast","stream":true,"max_tokens":40,"messages":[{"role":"user","content":"stream %d"}]}`, i)
			req, _ := http.NewRequest(http.MethodPost, gw.base+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			started <- struct{}{}
			raw, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || !bytes.Contains(raw, []byte("data: [DONE]")) {
				t.Errorf("stream %d: %d %v", i, resp.StatusCode, err)
				return
			}
			mu.Lock()
			acked[ws.ID] = append(acked[ws.ID], ledgertest.Ack{RequestID: resp.Header.Get("X-Btl-Request-Id"), Cost: -1})
			mu.Unlock()
		}()
	}
	for range streams {
		<-started
	}
	// Storage changes under the streams: a new spool directory.
	reload(t, admin, procCaddyfile(freePortFrom(admin), port, block("spool-2", dsn)))
	// Then only the credentials change (trust auth ignores the password): a normal reload.
	rotated := dsn + "&password=rotated"
	reload(t, admin, procCaddyfile(freePortFrom(admin), port, block("spool-2", rotated)))
	wg.Wait()
	// A fresh connection: the reload closes the old server's idle keep-alive ones.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if ans := chatCall(fresh, gw.base, key, uniqueBody("after", 0, 100, 5)); ans.status != 200 {
		t.Fatalf("after the reloads: %d %v %s", ans.status, ans.err, ans.body)
	} else {
		acked[ws.ID] = append(acked[ws.ID], ans.ack(t))
	}
	waitAcked(t, store, ws.ID, ackIDs(acked[ws.ID]), 20*time.Second)
	rep := checkInvariants(t, store, acked, ws.ID)
	gw.stop() // its log is complete (and no longer written) once it has exited
	if strings.Contains(gw.log.String(), "ledger row not recorded") {
		t.Fatalf("rows lost in the reload:\n%s", gw.log.String())
	}
	t.Logf("%d streams across a storage-changing reload and a credential rotation: %v", streams, rep)
}

// freePortFrom returns the port of an admin URL (to keep it across reloads).
func freePortFrom(admin string) int {
	var port int
	fmt.Sscanf(admin[strings.LastIndex(admin, ":")+1:], "%d", &port)
	return port
}

// TestValidateBesideRunningGateway (issue 16): `caddy validate` on the running config
// passes: validation takes no spool lock and opens no database for writing.
func TestValidateBesideRunningGateway(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "btl.db")
	up := simUpstream(t)
	block := btlBlockFor("sqlite "+db, filepath.Join(dir, "spool"), "node-v", up)
	gw := startProc(t, dir, block)
	cfg := filepath.Join(dir, "validate.Caddyfile")
	if err := os.WriteFile(cfg, []byte(procCaddyfile(0, freePort(t), block)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gatewayBinary(t), "validate", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("validate beside the running gateway: %v\n%s", err, out)
	}
	// The running gateway still owns its spool and serves.
	if ans := chatCall(http.DefaultClient, gw.base, newWorkspaceKey(t, db), uniqueBody("v", 0, 50, 5)); ans.status != 200 {
		t.Fatalf("after validate: %d %s", ans.status, ans.body)
	}
}

func newWorkspaceKey(t *testing.T, db string) string {
	t.Helper()
	store, err := ledger.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, key, err := store.CreateWorkspace(context.Background(), "w", ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestMoneyRevocationAfterOutage (issue 13 item 5): node B loses PostgreSQL for 7 s (long
// enough for a doubling backoff to reach its cap), three times; a key revoked on node A as
// the database comes back stops working on B within about a second each time (the LISTEN
// reconnect backoff starts over and re-reads revocations on reconnect).
func TestMoneyRevocationAfterOutage(t *testing.T) {
	dsn, store := openPG(t)
	dir := t.TempDir()
	ctx := context.Background()
	_, owner, err := store.CreateWorkspace(ctx, "rev-outage", 10*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newPGProxy(t, "127.0.0.1:5432")
	proxied := strings.Replace(dsn, "127.0.0.1:5432", proxy.ln.Addr().String(), 1)
	up := simUpstream(t)
	a := startProc(t, dir, btlBlockFor("postgres "+dsn, filepath.Join(dir, "spool-a"), "node-a", up))
	b := startProc(t, dir, btlBlockFor("postgres "+proxied, filepath.Join(dir, "spool-b"), "node-b", up))
	var worst time.Duration
	for round := range 3 {
		id, secret := createKey(t, a.base, owner, `{"scopes":["inference"]}`)
		if status, raw := call(t, "GET", b.base+"/v1/models", secret, ""); status != 200 {
			t.Fatalf("warm: %d %s", status, raw)
		}
		proxy.setDown(true)
		time.Sleep(7 * time.Second)
		proxy.setDown(false)
		if status, raw := call(t, "DELETE", a.base+"/v1/api-keys/"+id, owner, ""); status != 200 {
			t.Fatalf("revoke: %d %s", status, raw)
		}
		revoked := time.Now()
		for {
			if status, _ := call(t, "GET", b.base+"/v1/models", secret, ""); status == 401 {
				break
			}
			if time.Since(revoked) > 10*time.Second {
				t.Fatalf("round %d: the other node accepts the revoked key 10 s after the outage", round)
			}
			time.Sleep(20 * time.Millisecond)
		}
		took := time.Since(revoked)
		worst = max(worst, took)
		t.Logf("round %d: after a 7 s outage, a revocation reached the other node in %v", round, took.Round(time.Millisecond))
	}
	if worst > 2*time.Second { // the promise is about a second; twice that absorbs a loaded host
		t.Fatalf("a revocation took %v after an outage", worst)
	}
}

// TestMoneyDatabaseStallAnswers503 (issue 13 item 6): PostgreSQL stalls (no RST); a request
// whose key is not cached, and one whose workspace has no lease yet, get an honest 503 with
// Retry-After within seconds instead of hanging.
func TestMoneyDatabaseStallAnswers503(t *testing.T) {
	dsn, store := openPG(t)
	dir := t.TempDir()
	ctx := context.Background()
	proxy := newPGProxy(t, "127.0.0.1:5432")
	proxied := strings.Replace(dsn, "127.0.0.1:5432", proxy.ln.Addr().String(), 1)
	gw := startProc(t, dir, btlBlockFor("postgres "+proxied, filepath.Join(dir, "spool"), "node-s", simUpstream(t)))
	_, cachedKey, err := store.CreateWorkspace(ctx, "cached", 10*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	_, freshKey, err := store.CreateWorkspace(ctx, "fresh", 10*ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	// Cache cachedKey without leasing for its workspace.
	if status, raw := call(t, "GET", gw.base+"/v1/models", cachedKey, ""); status != 200 {
		t.Fatalf("warm: %d %s", status, raw)
	}
	proxy.stall(true)
	defer proxy.stall(false)
	client := &http.Client{Timeout: 30 * time.Second}
	for _, tc := range []struct{ name, key string }{{"uncached key", freshKey}, {"no lease yet", cachedKey}} {
		start := time.Now()
		ans := chatCall(client, gw.base, tc.key, uniqueBody("stall", 0, 50, 5))
		took := time.Since(start)
		if ans.err != nil || ans.status != http.StatusServiceUnavailable || ans.header.Get("Retry-After") == "" {
			t.Fatalf("%s in a database stall: %d %v after %v: %s", tc.name, ans.status, ans.err, took, ans.body)
		}
		t.Logf("%s in a database stall: 503 with Retry-After %ss after %v", tc.name, ans.header.Get("Retry-After"), took.Round(time.Millisecond))
		if took > 10*time.Second {
			t.Fatalf("%s: took %v", tc.name, took)
		}
	}
}

// TestCLILeases: an operator lists leases and gives back those of a node that is gone for
// good (its lease had expired); a node that still renews its lease is refused.
func TestCLILeases(t *testing.T) {
	bin := gatewayBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "btl.db")
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte("{\n\tbtl {\n\t\tstorage sqlite "+db+"\n\t}\n}\n:0 {\n\trespond ok\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := ledger.OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ws := mustCreateWorkspace(t, store, 3*ledger.Credit)
	if _, err := store.AcquireLease(ctx, ws, "gone", ledger.Credit, 1, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AcquireLease(ctx, ws, "alive", ledger.Credit, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	run := func(args ...string) (map[string]any, error) {
		cmd := exec.Command(bin, append(append([]string{"btl"}, args...), "--config", cfg, "--adapter", "caddyfile")...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir)
		out, err := cmd.Output()
		var m map[string]any
		if err == nil {
			err = json.Unmarshal(out, &m)
		}
		return m, err
	}
	list, err := run("leases", "list")
	if err != nil || len(list["leases"].([]any)) != 2 {
		t.Fatalf("leases list: %v %v", list, err)
	}
	if _, err := run("leases", "release", "--node", "alive"); err == nil {
		t.Fatal("released the lease of a node that still renews it")
	}
	rel, err := run("leases", "release", "--node", "gone")
	if err != nil || len(rel["released"].([]any)) != 1 {
		t.Fatalf("leases release: %v %v", rel, err)
	}
	if l, err := store.AcquireLease(ctx, ws, "new", 2*ledger.Credit, 1, time.Minute); err != nil || l.Granted != 2*ledger.Credit {
		t.Fatalf("the gone node's money is not back: %+v %v", l, err)
	}
}

func mustCreateWorkspace(t *testing.T, store ledger.Store, credits ledger.Micros) string {
	t.Helper()
	ws, _, err := store.CreateWorkspace(context.Background(), "w", credits)
	if err != nil {
		t.Fatal(err)
	}
	return ws.ID
}

// failingInserts is a store whose database never takes rows (they stay in the spool).
type failingInserts struct{ ledger.Store }

func (failingInserts) InsertRows(context.Context, string, []ledger.Row) error {
	return fmt.Errorf("database away")
}

// TestLegacySpoolIsReplayed: rows left in a spool where an earlier version put it by default
// (its directory hashed the DSN with its credentials) reach the database, and the old
// directory goes.
func TestLegacySpoolIsReplayed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := ledger.OpenSQLite(ctx, filepath.Join(dir, "btl.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ws, _, err := store.CreateWorkspace(ctx, "legacy", ledger.Credit)
	if err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(dir, "legacy-spool")
	w, err := ledger.NewWriter(failingInserts{store}, ledger.WriterOptions{Dir: legacy, NodeID: "old"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := w.Append(ledger.Row{RequestID: fmt.Sprintf("req_legacy_%d", i), Time: time.Now(), WorkspaceID: ws.ID, CostMicros: 7}); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_ = w.Close(short) // the rows stay in the spool
	drainLegacySpool(ctx, store, legacy, zap.NewNop())
	if b, _ := store.Balance(ctx, ws.ID); b != ledger.Credit-35 {
		t.Fatalf("balance %s after replaying the legacy spool", b)
	}
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Fatalf("the legacy spool is still there: %v", err)
	}
}
