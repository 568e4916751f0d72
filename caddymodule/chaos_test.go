package caddymodule

// The chaos run (`make chaos`): two gateway processes on one PostgreSQL, mixed stream and
// non-stream load with unique bodies, and faults on a timeline — PostgreSQL cuts and stalls
// (TCP proxies), a kill -9 and restart, a storage-changing reload, a full spool filesystem
// (a tmpfs, when the run may mount one), client aborts. It ends with the money-invariant
// checker and prints its figures. Set BTL_CHAOS=1 to run it; BTL_CHAOS_SECONDS bounds the
// load (default 100).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badtheorylabs/btl-runtime/ledger"
	"github.com/badtheorylabs/btl-runtime/ledger/ledgertest"
	"github.com/badtheorylabs/btl-runtime/providers/simulated"
)

// chaosTally is what the clients saw.
type chaosTally struct {
	mu       sync.Mutex
	requests int
	acked    map[string][]ledgertest.Ack
	refused  map[string]int // by reason
	aborted  int
	events   []string
	start    time.Time
}

func (c *chaosTally) note(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, fmt.Sprintf("%6.1fs  ", time.Since(c.start).Seconds())+fmt.Sprintf(format, args...))
}

func (c *chaosTally) refuse(reason string) {
	c.mu.Lock()
	c.refused[reason]++
	c.mu.Unlock()
}

// refusalReason names an answer that was not a success, for the table.
func refusalReason(status int, body []byte) string {
	switch {
	case status == http.StatusPaymentRequired:
		return "402 insufficient credit"
	case status == http.StatusServiceUnavailable && strings.Contains(string(body), "cannot record usage"):
		return "503 spool full or closing"
	case status == http.StatusServiceUnavailable && strings.Contains(string(body), "balance"):
		return "503 lease unavailable (database away)"
	case status == http.StatusServiceUnavailable && strings.Contains(string(body), "API keys"):
		return "503 key lookup (database away)"
	case status == http.StatusServiceUnavailable:
		return "503 other"
	case status == http.StatusTooManyRequests:
		return "429"
	}
	return strconv.Itoa(status)
}

func TestChaos(t *testing.T) {
	if os.Getenv("BTL_CHAOS") == "" {
		t.Skip("the chaos run takes minutes: make chaos (BTL_CHAOS=1)")
	}
	seconds := 100
	if v, err := strconv.Atoi(os.Getenv("BTL_CHAOS_SECONDS")); err == nil && v >= 30 {
		seconds = v
	}
	dsn, store := openPG(t)
	dir := t.TempDir()
	ctx := context.Background()

	// Workspaces: two rich, one medium, one far below a lease (borrowed per request).
	grants := []ledger.Micros{50 * ledger.Credit, 50 * ledger.Credit, 3 * ledger.Credit, 400_000}
	var wss, keys []string
	for i, g := range grants {
		ws, key, err := store.CreateWorkspace(ctx, fmt.Sprintf("chaos-%d", i), g)
		if err != nil {
			t.Fatal(err)
		}
		wss, keys = append(wss, ws.ID), append(keys, key)
	}

	sim := httptest.NewServer(simulated.New(simulated.Options{ChunkDelay: 4 * time.Millisecond}))
	defer sim.Close()
	up := sim.URL + "/v1"
	pa, pb := newPGProxy(t, "127.0.0.1:5432"), newPGProxy(t, "127.0.0.1:5432")
	dsnA := strings.Replace(dsn, "127.0.0.1:5432", pa.ln.Addr().String(), 1)
	dsnB := strings.Replace(dsn, "127.0.0.1:5432", pb.ln.Addr().String(), 1)

	// Node A's spool lives on a small tmpfs when the run may mount one.
	spoolFS := filepath.Join(dir, "spool-fs")
	tmpfs := true
	if err := os.MkdirAll(spoolFS, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := execMount(spoolFS, "8m"); err != nil {
		tmpfs = false
		t.Logf("no tmpfs (%v %s): the full-disk phase is skipped", err, out)
	} else {
		t.Cleanup(func() { _ = execUmount(spoolFS) })
	}
	blockA := func(spool string) string {
		return btlBlockTTL("postgres "+dsnA, filepath.Join(spoolFS, spool), "node-a", up, "5s")
	}
	blockB := btlBlockTTL("postgres "+dsnB, filepath.Join(dir, "spool-b"), "node-b", up, "5s")
	a, adminA, portA := startProcAdmin(t, dir, blockA("a1"))
	var bMu sync.Mutex
	b := startProc(t, dir, blockB)
	nodeB := func() *gatewayProc { bMu.Lock(); defer bMu.Unlock(); return b }

	tally := &chaosTally{acked: map[string][]ledgertest.Ack{}, refused: map[string]int{}, start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int64
	for c := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 7))
			client := &http.Client{Timeout: 15 * time.Second}
			for {
				select {
				case <-stop:
					return
				case <-time.After(40 * time.Millisecond):
				}
				w := r.IntN(len(wss))
				node := a
				if r.IntN(2) == 1 {
					node = nodeB()
				}
				stream := r.IntN(2) == 0
				abort := r.IntN(10) == 0
				n := seq.Add(1)
				body := fmt.Sprintf(`{"model":"btl-fast","stream":%v,"max_tokens":%d,"messages":[{"role":"user","content":"chaos %d %s"}]}`,
					stream, 20+r.IntN(40), n, strings.Repeat("x", r.IntN(800)))
				rctx, cancel := context.WithCancel(context.Background())
				if abort {
					time.AfterFunc(time.Duration(5+r.IntN(40))*time.Millisecond, cancel)
				}
				req, _ := http.NewRequestWithContext(rctx, http.MethodPost, node.base+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keys[w])
				tally.mu.Lock()
				tally.requests++
				tally.mu.Unlock()
				resp, err := client.Do(req)
				if err != nil {
					cancel()
					if abort {
						tally.mu.Lock()
						tally.aborted++
						tally.mu.Unlock()
					} else {
						tally.refuse("no answer (node down)")
					}
					continue
				}
				raw, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				complete := rerr == nil && resp.StatusCode == 200 &&
					(!stream && len(raw) > 0 && raw[len(raw)-1] == '}' || stream && strings.Contains(string(raw), "data: [DONE]"))
				switch {
				case complete:
					ack := ledgertest.Ack{RequestID: resp.Header.Get("X-Btl-Request-Id"), Cost: -1}
					if c := resp.Header.Get("X-Btl-Cost-Usd"); c != "" {
						ack.Cost = usdToMicros(t, c)
					}
					tally.mu.Lock()
					tally.acked[wss[w]] = append(tally.acked[wss[w]], ack)
					tally.mu.Unlock()
				case rerr != nil || abort:
					tally.mu.Lock()
					tally.aborted++
					tally.mu.Unlock()
				default:
					tally.refuse(refusalReason(resp.StatusCode, raw))
				}
			}
		}()
	}

	// The fault timeline, scaled to the run's length.
	at := func(frac float64) time.Time {
		return tally.start.Add(time.Duration(frac * float64(seconds) * float64(time.Second)))
	}
	sleepUntil := func(ts time.Time) { time.Sleep(time.Until(ts)) }
	sleepUntil(at(0.10))
	pa.setDown(true)
	tally.note("PostgreSQL cut for node A")
	sleepUntil(at(0.20))
	pa.setDown(false)
	tally.note("PostgreSQL back for node A")
	pb.stall(true)
	tally.note("PostgreSQL stalled (no RST) for node B")
	sleepUntil(at(0.27))
	pb.stall(false)
	tally.note("stall over")
	sleepUntil(at(0.35))
	nodeB().kill9()
	tally.note("node B killed with SIGKILL")
	time.Sleep(2 * time.Second)
	bMu.Lock()
	b = startProc(t, dir, blockB)
	bMu.Unlock()
	tally.note("node B restarted on its spool")
	sleepUntil(at(0.48))
	reload(t, adminA, procCaddyfile(freePortFrom(adminA), portA, blockA("a2")))
	tally.note("node A reloaded onto a new spool directory")
	if tmpfs {
		sleepUntil(at(0.60))
		filler := fillDisk(t, spoolFS, 4<<10)
		tally.note("node A's spool filesystem filled")
		sleepUntil(at(0.72))
		_ = os.Remove(filler)
		tally.note("space freed")
	}
	sleepUntil(at(0.82))
	pa.setDown(true)
	pb.setDown(true)
	tally.note("PostgreSQL cut for both nodes")
	time.Sleep(3 * time.Second)
	pa.setDown(false)
	pb.setDown(false)
	tally.note("PostgreSQL back")
	sleepUntil(at(1.0))
	close(stop)
	wg.Wait()
	tally.note("load stopped")

	// Every acknowledged request must reach the database from the spools.
	for _, ws := range wss {
		waitAcked(t, store, ws, ackIDs(tally.acked[ws]), 60*time.Second)
	}
	rep, err := ledgertest.Check(ctx, store, ledgertest.Options{Workspaces: wss, Acked: tally.acked, Price: catalogPrice})
	if err != nil {
		t.Fatal(err)
	}
	printChaos(tally, rep, seconds, tmpfs)
	if !rep.OK() {
		t.Fatalf("money invariants broken:\n%v\nnode A log:\n%s", rep, lastLines(a.log.String(), 40))
	}
}

func printChaos(c *chaosTally, rep *ledgertest.Report, seconds int, tmpfs bool) {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "\nchaos run: %d s of load, two nodes on one PostgreSQL\n", seconds)
	for _, e := range c.events {
		fmt.Fprintln(w, "  "+e)
	}
	if !tmpfs {
		fmt.Fprintln(w, "  (no tmpfs: full-disk phase skipped)")
	}
	refused := 0
	var reasons []string
	for r, n := range c.refused {
		refused += n
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	fmt.Fprintf(w, "\n| figure | value |\n|---|---:|\n")
	fmt.Fprintf(w, "| requests | %d |\n| acknowledged (200, complete body) | %d |\n| ledger rows | %d |\n", c.requests, rep.Acknowledged, rep.Rows)
	fmt.Fprintf(w, "| refused | %d |\n", refused)
	for _, r := range reasons {
		fmt.Fprintf(w, "| · %s | %d |\n", r, c.refused[r])
	}
	fmt.Fprintf(w, "| client aborts | %d |\n", c.aborted)
	fmt.Fprintf(w, "| granted | $%s |\n| spent | $%s |\n", rep.Granted, rep.Spent)
	fmt.Fprintf(w, "| overspend | $%s |\n| acknowledged but unbilled | %d |\n| double rows | %d |\n| rows with cost ≠ usage × price | %d |\n",
		rep.Overspend, rep.Unbilled, rep.Doubled, rep.Mispriced)
	fmt.Fprintf(w, "| invariant violations | %d |\n\n", rep.Violations)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
