// Command load measures what the btl chain costs on top of plain Caddy, the way users run it:
// every request body is distinct (as real traffic is: identical bodies would measure the
// coalescer, not the gateway), the chain has its default features on and the SQLite ledger
// records every request. In one run it starts the simulated upstream, a plain Caddy
// reverse_proxy in front of it and a Caddy with the full btl chain, and drives them with the
// same requests in three modes — non-stream, stream, and stream with include_usage — each as
// a closed loop at saturation and an open loop at a paced rate. Plain Caddy and btl are
// measured back to back in every round (their order alternating), so each round gives a paired
// ratio; the paced run drives all targets at once, their requests interleaved on one schedule.
// The report shows medians over the rounds and the spread (min–max) of the paired figures.
//
// CPU per request is the server process's own utime+stime from /proc/PID/stat. Servers share
// one core (GOMAXPROCS=1) and the load generator gets the other (taskset), as in
// shared/reference/performance.md; absolute numbers move with the machine, the ratios are the
// result.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	caddyBin := flag.String("caddy", "./caddy", "the gateway binary (make build)")
	duration := flag.Duration("duration", 2*time.Second, "length of each measured run")
	rounds := flag.Int("rounds", 7, "interleaved paired rounds; rows report medians (shared machines are noisy)")
	conns := flag.Int("c", 32, "connections for the closed-loop runs")
	rate := flag.Int("rate", 300, "requests/s for the paced (open-loop) runs")
	pacedDur := flag.Duration("paced-duration", 4*time.Second, "length of each paced run (rate × this requests per target and round)")
	modeList := flag.String("modes", "non-stream,stream,stream+usage", "the modes measured, comma separated")
	direct := flag.Bool("direct", true, "also measure the simulated upstream alone, for reference")
	serverCPU := flag.String("server-cpu", "1", "CPU list for the servers (taskset); empty: no pinning")
	out := flag.String("out", "", "also write the markdown table to this file")
	beforeBin := flag.String("before", "", "another gateway binary (an earlier build) measured as a second btl chain in the same rounds, for before/after")
	beforeChain := flag.String("before-chain", "btl_auth,btl_meter,btl_optimize,btl_route", "the handlers of the -before chain, comma separated, a semicolon starting a new line within one (an ablation: -before with this binary and fewer handlers, or \"btl_optimize {;disable dedupe;}\")")
	profile := flag.String("profile", "", "write a CPU profile of the btl gateway to this file")
	profileMode := flag.String("profile-mode", "stream", "the mode profiled: non-stream, stream or stream+usage")
	traceOut := flag.String("trace", "", "write a Go execution trace of the btl gateway during the first paced run of -profile-mode to this file")
	flag.Parse()

	bin, err := filepath.Abs(*caddyBin)
	check(err)
	dir, err := os.MkdirTemp("", "btl-bench-")
	check(err)
	defer os.RemoveAll(dir)

	upPort, plainPort, btlPort := freePort(), freePort(), freePort()
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_, _ = p.Process.Wait()
		}
	}()
	start := func(bin, name string, args ...string) *exec.Cmd {
		cmdArgs := append([]string{bin}, args...)
		var cmd *exec.Cmd
		if *serverCPU != "" {
			if _, err := exec.LookPath("taskset"); err == nil {
				cmd = exec.Command("taskset", append([]string{"-c", *serverCPU}, cmdArgs...)...)
			}
		}
		if cmd == nil {
			cmd = exec.Command(cmdArgs[0], cmdArgs[1:]...)
		}
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		logf, _ := os.Create(filepath.Join(dir, name+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		check(cmd.Start())
		procs = append(procs, cmd)
		return cmd
	}

	up := start(bin, "upstream", "btl", "simulate", "--listen", fmt.Sprintf("127.0.0.1:%d", upPort))
	plainCfg := filepath.Join(dir, "plain.caddyfile")
	check(os.WriteFile(plainCfg, []byte(fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	reverse_proxy 127.0.0.1:%d {
		flush_interval -1
		transport http {
			keepalive_idle_conns_per_host 1024
		}
	}
}
`, plainPort, upPort)), 0o644))
	adminPort := freePort()
	admin := "admin off"
	if *profile != "" || *traceOut != "" {
		admin = fmt.Sprintf("admin 127.0.0.1:%d", adminPort)
	}
	// btlGateway writes the config of a btl chain named name on port and makes its workspace
	// with bin (each chain has its own ledger).
	btlGateway := func(bin, name string, port int, admin, chain string) (cfg, key string) {
		cfg = filepath.Join(dir, name+".caddyfile")
		check(os.WriteFile(cfg, []byte(fmt.Sprintf(`{
	%s
	persist_config off
	log {
		level ERROR
	}
	btl {
		storage sqlite %s
		spool_dir %s
		provider sim openai_compatible {
			base_url http://127.0.0.1:%d/v1
		}
		model btl-bench {
			candidates sim/gpt-4o-mini
		}
	}
}
http://127.0.0.1:%d {
	%s
}
`, admin, filepath.Join(dir, name+".db"), filepath.Join(dir, name+"-spool"), upPort, port, strings.NewReplacer(",", "\n\t", ";", "\n\t").Replace(chain))), 0o644))
		// A workspace with ample credits, so the chain authenticates, reserves and records as
		// in production.
		wsOut, err := exec.Command(bin, "btl", "workspace", "create", "--config", cfg, "--adapter", "caddyfile",
			"--name", "bench", "--credits", "100000").Output()
		check(err)
		var ws struct {
			APIKey string `json:"api_key"`
		}
		check(json.Unmarshal(wsOut, &ws))
		return cfg, ws.APIKey
	}
	btlCfg, btlKey := btlGateway(bin, "btl", btlPort, admin, "btl_auth,btl_meter,btl_optimize,btl_route")
	plain := start(bin, "plain-caddy", "run", "--config", plainCfg, "--adapter", "caddyfile")
	gw := start(bin, "btl-caddy", "run", "--config", btlCfg, "--adapter", "caddyfile")
	ports := []int{upPort, plainPort, btlPort}
	var beforeT *target
	if *beforeBin != "" {
		bb, err := filepath.Abs(*beforeBin)
		check(err)
		port := freePort()
		cfg, key := btlGateway(bb, "before", port, "admin off", *beforeChain)
		p := start(bb, "before-caddy", "run", "--config", cfg, "--adapter", "caddyfile")
		ports = append(ports, port)
		beforeT = &target{"btl chain (before)", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port), "btl-bench", p.Process.Pid, key}
	}
	for _, p := range ports {
		waitPort(p)
	}

	plainT := target{"Caddy reverse_proxy", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", plainPort), "gpt-4o-mini", plain.Process.Pid, ""}
	btlT := target{"btl chain", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", btlPort), "btl-bench", gw.Process.Pid, btlKey}
	directT := target{"direct (simulated upstream)", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", upPort), "gpt-4o-mini", up.Process.Pid, ""}
	samples := map[string][]measure{}
	keyOf := func(tg target, m mode) string { return tg.name + "|" + m.name }
	modes = selectModes(*modeList)
	servers := []int{up.Process.Pid, plain.Process.Pid, gw.Process.Pid}
	if beforeT != nil {
		servers = append(servers, beforeT.pid)
	}
	for round := range *rounds {
		for _, m := range modes {
			// Paired: plain Caddy and btl back to back, their order alternating by round.
			order := []target{plainT, btlT}
			if round%2 == 1 {
				order = []target{btlT, plainT}
			}
			if beforeT != nil {
				// The two btl chains alternate too: a chain paced after the other read
				// 6–31 µs slower in either order, which a fixed order added to the
				// before/after difference.
				if round%2 == 1 {
					order = append([]target{*beforeT}, order...)
				} else {
					order = append(order, *beforeT)
				}
			}
			if *direct {
				order = append(order, directT)
			}
			for _, tg := range order {
				warm(tg, m, *conns)
			}
			// The paced runs come first, on quiet servers: after a saturated run a server
			// may still be working off its backlog (the btl ledger ingests the rows of
			// thousands of requests), and the paced latency would measure that, not the
			// cost of one request at low load. A btl chain is paced in one run with plain
			// Caddy, their requests interleaved on one schedule, so both meet the same
			// machine: a shared VM's wake-up latency drifts by hundreds of µs between runs
			// a few seconds apart, more than the difference measured.
			opens, refs := map[string]result{}, map[string]result{}
			pace := func(tgs ...target) []result {
				waitQuiet(servers)
				var traceDone chan struct{}
				if *traceOut != "" && round == 0 && m.name == *profileMode && len(tgs) == 2 && tgs[1] == btlT {
					traceDone = make(chan struct{})
					secs := max(int(pacedDur.Seconds())-1, 1)
					go func() {
						defer close(traceDone)
						fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/trace?seconds=%d", adminPort, secs), *traceOut)
					}()
					go fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, secs), *traceOut+".cpu")
				}
				rs := runOpenTogether(tgs, m, *rate, *pacedDur)
				if traceDone != nil {
					<-traceDone
				}
				return rs
			}
			for _, tg := range order {
				switch {
				case tg == plainT:
				case tg == directT:
					opens[tg.name] = pace(tg)[0]
				default:
					rs := pace(plainT, tg)
					opens[tg.name], refs[tg.name] = rs[1], rs[0]
					if tg == btlT {
						opens[plainT.name] = rs[0]
					}
				}
			}
			for _, tg := range order {
				var profDone chan struct{}
				if *profile != "" && round == 0 && m.name == *profileMode && tg == btlT {
					profDone = make(chan struct{})
					go func() {
						defer close(profDone)
						fetch(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, max(int(duration.Seconds())-1, 1)), *profile)
					}()
				}
				closed := runClosed(tg, m, *conns, *duration)
				if profDone != nil {
					<-profDone
				}
				open := opens[tg.name]
				samples[keyOf(tg, m)] = append(samples[keyOf(tg, m)], measure{closed, open, refs[tg.name]})
				fmt.Fprintf(os.Stderr, "round %d %-28s %-13s %8.0f req/s  p50 %6s p99 %6s  cpu %5.1f µs/req | @%d rps p50 %6s p99 %6s  errors %d/%d\n",
					round+1, tg.name, m.name, closed.rps, fmtDur(closed.p50), fmtDur(closed.p99), closed.cpuPerReq,
					*rate, fmtDur(open.p50), fmtDur(open.p99), closed.errors, open.errors)
			}
		}
	}
	rep := report{conns: *conns, rate: *rate, d: *duration, paced: *pacedDur, rounds: *rounds}
	for _, m := range modes {
		c := comparison{mode: m.name, plain: samples[keyOf(plainT, m)], btl: samples[keyOf(btlT, m)]}
		if *direct {
			c.direct = samples[keyOf(directT, m)]
		}
		if beforeT != nil {
			c.before = samples[keyOf(*beforeT, m)]
		}
		rep.rows = append(rep.rows, c)
	}
	table := rep.render()
	fmt.Println(table)
	if *out != "" {
		check(os.WriteFile(*out, []byte(table), 0o644))
	}
}

// mode is one way of calling the chat endpoint.
type mode struct {
	name         string
	stream       bool
	includeUsage bool
}

var modes = []mode{{"non-stream", false, false}, {"stream", true, false}, {"stream+usage", true, true}}

// measure is one target's closed- and open-loop result in one round; for a btl chain, ref is
// plain Caddy's result in the same paced run.
type measure struct{ closed, open, ref result }

type target struct {
	name, url, model string
	pid              int
	key              string // the bearer key (btl chains)
}

type result struct {
	rps       float64
	p50, p99  time.Duration
	cpuPerReq float64 // µs of server CPU per request
	errors    int64
	n         int64
}

// bodySeq numbers the request bodies: no two requests of a run are identical.
var bodySeq atomic.Int64

// requestBody is a chat request whose user message carries a sequence number, so every body
// is distinct; the rest is the shape of a typical short chat call.
func requestBody(model string, m mode) []byte {
	b := make([]byte, 0, 320)
	b = append(b, `{"model":"`...)
	b = append(b, model...)
	b = append(b, `","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Question `...)
	b = strconv.AppendInt(b, bodySeq.Add(1), 10)
	b = append(b, `: give me one sentence about load testing gateways."}],"max_tokens":64`...)
	if m.stream {
		b = append(b, `,"stream":true`...)
	}
	if m.includeUsage {
		b = append(b, `,"stream_options":{"include_usage":true}`...)
	}
	return append(b, '}')
}

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns * 2,
		DisableCompression: true, IdleConnTimeout: time.Minute,
	}, Timeout: 30 * time.Second}
}

func doOne(c *http.Client, tg target, body []byte) error {
	url := tg.url
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tg.key != "" {
		req.Header.Set("Authorization", "Bearer "+tg.key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

func warm(tg target, m mode, conns int) {
	c := newClient(conns)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				_ = doOne(c, tg, requestBody(tg.model, m))
			}
		}()
	}
	wg.Wait()
}

// cpuTicks reads utime+stime of a process (and its threads) in clock ticks.
func cpuTicks(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return ut + st
}

// clkTck is USER_HZ, 100 on Linux.
const clkTck = 100

func runClosed(tg target, m mode, conns int, d time.Duration) result {
	c := newClient(conns)
	var (
		mu    sync.Mutex
		lats  []time.Duration
		errs  atomic.Int64
		wg    sync.WaitGroup
		stop  atomic.Bool
		count atomic.Int64
	)
	cpu0 := cpuTicks(serverPID(tg))
	t0 := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for !stop.Load() {
				body := requestBody(tg.model, m)
				s := time.Now()
				if err := doOne(c, tg, body); err != nil {
					errs.Add(1)
					continue
				}
				local = append(local, time.Since(s))
				count.Add(1)
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	cpu := cpuTicks(serverPID(tg)) - cpu0
	return summarize(lats, errs.Load(), elapsed, cpu)
}

// fetch saves what url answers (a profile or a trace from the admin endpoint) to path.
func fetch(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetch:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetch:", err)
		return
	}
	_, _ = io.Copy(f, resp.Body)
	f.Close()
}

// waitQuiet waits (at most 5s) until the servers use less than 5% of a core over 200ms.
func waitQuiet(pids []int) {
	const window = 200 * time.Millisecond
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var before int64
		for _, p := range pids {
			before += cpuTicks(p)
		}
		time.Sleep(window)
		var after int64
		for _, p := range pids {
			after += cpuTicks(p)
		}
		if float64(after-before)/clkTck < 0.05*window.Seconds() {
			return
		}
	}
}

// selectModes picks the named modes, in the standard order.
func selectModes(list string) []mode {
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		want[strings.TrimSpace(n)] = true
	}
	var out []mode
	for _, m := range modes {
		if want[m.name] {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		check(fmt.Errorf("no known mode in %q", list))
	}
	return out
}

// serverPID is the measured process: taskset execs the binary, so the pid is the server's.
func serverPID(tg target) int { return tg.pid }

// runOpenTogether paces every target at rate requests/s for d in one open loop: each
// interval sends one request to each target, spaced evenly and in an order that rotates, so
// all of them are measured on the same schedule under the same machine conditions. With two
// targets the rotation gives each the other as its predecessor half of the time, so the work
// one leaves behind on the shared core weighs on both alike.
//
// Latency counts from when the request is sent, not from its scheduled time: each request has
// its own goroutine, so a slow server never holds back the next send (no coordinated
// omission), while the sender's own sleep overshoots by 0.1–1 ms on this VM (measured), noise
// several times the difference measured.
func runOpenTogether(tgs []target, m mode, rate int, d time.Duration) []result {
	interval := time.Second / time.Duration(rate)
	slot := interval / time.Duration(len(tgs))
	type side struct {
		c    *http.Client
		mu   sync.Mutex
		lats []time.Duration
		errs atomic.Int64
	}
	sides := make([]*side, len(tgs))
	for i := range sides {
		sides[i] = &side{c: newClient(256)}
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	n := int(d / interval)
	for i := range n {
		for k := range tgs {
			j := (i + k) % len(tgs)
			tg, sd := tgs[j], sides[j]
			due := t0.Add(time.Duration(i)*interval + time.Duration(k)*slot)
			if w := time.Until(due); w > 0 {
				time.Sleep(w)
			}
			body := requestBody(tg.model, m)
			wg.Add(1)
			go func() {
				defer wg.Done()
				sent := time.Now()
				err := doOne(sd.c, tg, body)
				l := time.Since(sent)
				if err != nil {
					sd.errs.Add(1)
					return
				}
				sd.mu.Lock()
				sd.lats = append(sd.lats, l)
				sd.mu.Unlock()
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(t0)
	out := make([]result, len(tgs))
	for i, sd := range sides {
		out[i] = summarize(sd.lats, sd.errs.Load(), elapsed, 0)
	}
	return out
}

func summarize(lats []time.Duration, errs int64, elapsed time.Duration, cpuTicksUsed int64) result {
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	r := result{errors: errs, n: int64(len(lats))}
	if len(lats) == 0 {
		return r
	}
	r.rps = float64(len(lats)) / elapsed.Seconds()
	r.p50 = lats[len(lats)/2]
	r.p99 = lats[len(lats)*99/100]
	r.cpuPerReq = float64(cpuTicksUsed) / clkTck * 1e6 / float64(len(lats))
	return r
}

// comparison is one mode's samples, round by round (index i of each is round i).
type comparison struct {
	mode                       string
	plain, btl, direct, before []measure
}

type report struct {
	conns, rate, rounds int
	d, paced            time.Duration
	rows                []comparison
}

// stats is the median and the range of a sample.
type stats struct{ med, lo, hi float64 }

func summary(v []float64) stats {
	if len(v) == 0 {
		return stats{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return stats{s[len(s)/2], s[0], s[len(s)-1]}
}

// each applies get to every round's measure.
func each(ms []measure, get func(measure) float64) []float64 {
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = get(m)
	}
	return out
}

// paired applies f to every round's (plain, btl) pair.
func paired(c comparison, f func(plain, btl measure) float64) []float64 {
	out := make([]float64, 0, len(c.btl))
	for i := range min(len(c.plain), len(c.btl)) {
		out = append(out, f(c.plain[i], c.btl[i]))
	}
	return out
}

var (
	rps    = func(m measure) float64 { return m.closed.rps }
	p50c   = func(m measure) float64 { return float64(m.closed.p50.Microseconds()) }
	p50o   = func(m measure) float64 { return float64(m.open.p50.Microseconds()) }
	cpuReq = func(m measure) float64 { return m.closed.cpuPerReq }
)

func (r report) render() string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Load benchmark (%s, %d cores; servers pinned to one core with GOMAXPROCS=1, load generator on the other; "+
		"distinct request bodies, default features, SQLite ledger; %s per closed run; %s paced runs on quiet servers, each btl chain's with plain Caddy's requests interleaved on one schedule; %d interleaved paired rounds, medians)\n\n",
		host, numCPU(), r.d, r.paced, r.rounds)
	fmt.Fprintf(&b, "| target | mode | req/s (c=%d) | p50 (c=%d) | server CPU µs/req | p50 at %d rps |\n|---|---|---:|---:|---:|---:|\n", r.conns, r.conns, r.rate)
	for _, c := range r.rows {
		for _, t := range []struct {
			name string
			ms   []measure
		}{{"direct (simulated upstream)", c.direct}, {"Caddy reverse_proxy", c.plain}, {"btl chain", c.btl}, {"btl chain (before)", c.before}} {
			if len(t.ms) == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f µs | %.1f | %.0f µs |\n", t.name, c.mode,
				summary(each(t.ms, rps)).med, summary(each(t.ms, p50c)).med, summary(each(t.ms, cpuReq)).med, summary(each(t.ms, p50o)).med)
		}
	}
	b.WriteString("\nbtl chain against plain Caddy reverse_proxy, paired by round: median [min – max]\n\n" +
		"| mode | throughput ratio | added p50 at the paced rate | added CPU µs/req |\n|---|---:|---:|---:|\n")
	for _, c := range r.rows {
		for _, g := range []struct {
			label string
			ms    []measure
		}{{"", c.btl}, {" (before)", c.before}} {
			if len(g.ms) == 0 {
				continue
			}
			pc := comparison{plain: c.plain, btl: g.ms}
			ratio := summary(paired(pc, func(p, g measure) float64 { return rps(g) / max(rps(p), 1) }))
			lat := summary(paired(pc, func(_, g measure) float64 { return p50o(g) - float64(g.ref.p50.Microseconds()) }))
			cpu := summary(paired(pc, func(p, g measure) float64 { return cpuReq(g) - cpuReq(p) }))
			fmt.Fprintf(&b, "| %s%s | %.2f× [%.2f – %.2f] | %+.0f µs [%+.0f – %+.0f] | %+.1f [%+.1f – %+.1f] |\n", c.mode, g.label,
				ratio.med, ratio.lo, ratio.hi, lat.med, lat.lo, lat.hi, cpu.med, cpu.lo, cpu.hi)
		}
	}
	return b.String()
}

func numCPU() int {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(raw), "processor\t:")
}

func fmtDur(d time.Duration) string {
	if d >= time.Millisecond {
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitPort(p int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "port %d never opened\n", p)
	os.Exit(1)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
