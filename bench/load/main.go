// Command load measures what the btl chain costs on top of plain Caddy. In one run it starts
// the simulated upstream, a plain Caddy reverse_proxy in front of it and a Caddy with the full
// btl chain, and drives each (and the upstream directly) with the same requests: closed loop at
// saturation and open loop at a fixed moderate rate, non-stream and stream. It reports req/s,
// latency p50/p99 and the server process's CPU per request, and the btl/Caddy ratios.
//
// Servers share one core and the load generator gets the other (taskset), as in
// shared/reference/performance.md; absolute numbers move with the machine, the ratios are
// the result.
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
	duration := flag.Duration("duration", 3*time.Second, "length of each measured run")
	rounds := flag.Int("rounds", 3, "interleaved rounds; each row reports the median (shared machines are noisy)")
	conns := flag.Int("c", 32, "connections for the closed-loop runs")
	rate := flag.Int("rate", 500, "requests/s for the fixed-rate runs")
	serverCPU := flag.String("server-cpu", "1", "CPU list for the servers (taskset); empty: no pinning")
	out := flag.String("out", "", "also write the markdown table to this file")
	profile := flag.String("profile", "", "write a CPU profile of the btl gateway to this file")
	profileStream := flag.Bool("profile-stream", true, "profile the stream run (false: the non-stream run)")
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
	start := func(name string, args ...string) *exec.Cmd {
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

	up := start("upstream", "btl", "simulate", "--listen", fmt.Sprintf("127.0.0.1:%d", upPort))
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
	if *profile != "" {
		admin = fmt.Sprintf("admin 127.0.0.1:%d", adminPort)
	}
	btlCfg := filepath.Join(dir, "btl.caddyfile")
	check(os.WriteFile(btlCfg, []byte(fmt.Sprintf(`{
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
	btl_auth
	btl_meter
	btl_optimize
	btl_route
}
`, admin, filepath.Join(dir, "btl.db"), filepath.Join(dir, "spool"), upPort, btlPort)), 0o644))
	// A workspace with ample credits, so the chain authenticates, reserves and records as in
	// production.
	wsOut, err := exec.Command(bin, "btl", "workspace", "create", "--config", btlCfg, "--adapter", "caddyfile",
		"--name", "bench", "--credits", "100000").Output()
	check(err)
	var ws struct {
		APIKey string `json:"api_key"`
	}
	check(json.Unmarshal(wsOut, &ws))
	apiKey = ws.APIKey
	plain := start("plain-caddy", "run", "--config", plainCfg, "--adapter", "caddyfile")
	gw := start("btl-caddy", "run", "--config", btlCfg, "--adapter", "caddyfile")
	for _, p := range []int{upPort, plainPort, btlPort} {
		waitPort(p)
	}

	targets := []target{
		{"direct (simulated upstream)", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", upPort), "gpt-4o-mini", up.Process.Pid},
		{"Caddy reverse_proxy", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", plainPort), "gpt-4o-mini", plain.Process.Pid},
		{"btl chain", fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", btlPort), "btl-bench", gw.Process.Pid},
	}
	type sample struct{ closed, open []result }
	samples := map[string]*sample{}
	keyOf := func(tg target, stream bool) string { return fmt.Sprintf("%s|%v", tg.name, stream) }
	for round := range *rounds {
		for _, stream := range []bool{false, true} {
			for _, tg := range targets {
				body := requestBody(tg.model, stream)
				warm(tg.url, body, *conns)
				var profDone chan struct{}
				if *profile != "" && round == 0 && stream == *profileStream && tg.name == "btl chain" {
					profDone = make(chan struct{})
					go func() {
						defer close(profDone)
						resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, max(int(duration.Seconds())-1, 1)))
						if err != nil {
							fmt.Fprintln(os.Stderr, "profile:", err)
							return
						}
						defer resp.Body.Close()
						f, _ := os.Create(*profile)
						_, _ = io.Copy(f, resp.Body)
						f.Close()
					}()
				}
				closed := runClosed(tg, body, *conns, *duration)
				if profDone != nil {
					<-profDone
				}
				open := runOpen(tg, body, *rate, *duration)
				k := keyOf(tg, stream)
				if samples[k] == nil {
					samples[k] = &sample{}
				}
				samples[k].closed = append(samples[k].closed, closed)
				samples[k].open = append(samples[k].open, open)
				fmt.Fprintf(os.Stderr, "round %d %-28s stream=%-5v %8.0f req/s  p50 %6s p99 %6s  cpu %5.1f µs/req | @%d rps p50 %6s p99 %6s  errors %d/%d\n",
					round+1, tg.name, stream, closed.rps, fmtDur(closed.p50), fmtDur(closed.p99), closed.cpuPerReq,
					*rate, fmtDur(open.p50), fmtDur(open.p99), closed.errors, open.errors)
			}
		}
	}
	var rows []row
	for _, stream := range []bool{false, true} {
		for _, tg := range targets {
			s := samples[keyOf(tg, stream)]
			rows = append(rows, row{target: tg.name, stream: stream, closed: median(s.closed), open: median(s.open)})
		}
	}
	table := render(rows, *conns, *rate, *duration)
	fmt.Println(table)
	if *out != "" {
		check(os.WriteFile(*out, []byte(table), 0o644))
	}
}

type target struct {
	name, url, model string
	pid              int
}

type result struct {
	rps       float64
	p50, p99  time.Duration
	cpuPerReq float64 // µs of server CPU per request
	errors    int64
	n         int64
}

type row struct {
	target string
	stream bool
	closed result
	open   result
}

func requestBody(model string, stream bool) []byte {
	s := ""
	if stream {
		s = `,"stream":true`
	}
	return []byte(`{"model":"` + model + `","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Give me one sentence about load testing gateways."}],"max_tokens":64` + s + `}`)
}

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns * 2,
		DisableCompression: true, IdleConnTimeout: time.Minute,
	}, Timeout: 30 * time.Second}
}

// apiKey authenticates the btl chain; the other targets ignore it.
var apiKey string

func doOne(c *http.Client, url string, body []byte) error {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	// Every request must reach the upstream, as through plain Caddy: no coalescing of the
	// identical benchmark requests (the optimizer's other work still runs).
	req.Header.Set("X-Btl-Optimize", "-coalesce")
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

func warm(url string, body []byte, conns int) {
	c := newClient(conns)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_ = doOne(c, url, body)
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

func runClosed(tg target, body []byte, conns int, d time.Duration) result {
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
				s := time.Now()
				if err := doOne(c, tg.url, body); err != nil {
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

// serverPID is the measured process: taskset execs the binary, so the pid is the server's.
func serverPID(tg target) int { return tg.pid }

func runOpen(tg target, body []byte, rate int, d time.Duration) result {
	c := newClient(256)
	interval := time.Second / time.Duration(rate)
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs atomic.Int64
		wg   sync.WaitGroup
	)
	cpu0 := cpuTicks(tg.pid)
	t0 := time.Now()
	n := int(d / interval)
	for i := range n {
		due := t0.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := doOne(c, tg.url, body)
			// Latency from the scheduled time, so a stalled server is not hidden
			// (coordinated omission).
			l := time.Since(due)
			if err != nil {
				errs.Add(1)
				return
			}
			mu.Lock()
			lats = append(lats, l)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(lats, errs.Load(), time.Since(t0), cpuTicks(tg.pid)-cpu0)
}

// median takes each field's median over rounds.
func median(rs []result) result {
	pick := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	return result{
		rps:       pick(func(r result) float64 { return r.rps }),
		p50:       time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99:       time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
		cpuPerReq: pick(func(r result) float64 { return r.cpuPerReq }),
		errors:    int64(pick(func(r result) float64 { return float64(r.errors) })),
	}
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

func render(rows []row, conns, rate int, d time.Duration) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Load benchmark (%s, %d cores, servers pinned to one core with GOMAXPROCS=1, %s per run, median of interleaved rounds)\n\n", host, numCPU(), d)
	fmt.Fprintf(&b, "| target | mode | req/s (c=%d) | p50 / p99 (c=%d) | server CPU µs/req | p50 / p99 at %d rps |\n|---|---|---:|---:|---:|---:|\n", conns, conns, rate)
	for _, r := range rows {
		mode := "non-stream"
		if r.stream {
			mode = "stream"
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s / %s | %.1f | %s / %s |\n", r.target, mode, r.closed.rps,
			fmtDur(r.closed.p50), fmtDur(r.closed.p99), r.closed.cpuPerReq, fmtDur(r.open.p50), fmtDur(r.open.p99))
	}
	b.WriteString("\nbtl chain against plain Caddy reverse_proxy, same run:\n\n| mode | throughput ratio | added p50 at fixed rate | added CPU µs/req |\n|---|---:|---:|---:|\n")
	for _, stream := range []bool{false, true} {
		var plain, gw row
		for _, r := range rows {
			if r.stream == stream && r.target == "Caddy reverse_proxy" {
				plain = r
			}
			if r.stream == stream && r.target == "btl chain" {
				gw = r
			}
		}
		mode := "non-stream"
		if stream {
			mode = "stream"
		}
		ratio := 0.0
		if plain.closed.rps > 0 {
			ratio = gw.closed.rps / plain.closed.rps
		}
		fmt.Fprintf(&b, "| %s | %.0f%% | %+d µs | %+.1f |\n", mode, ratio*100,
			(gw.open.p50 - plain.open.p50).Microseconds(), gw.closed.cpuPerReq-plain.closed.cpuPerReq)
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
