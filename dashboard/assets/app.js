// BTL Runtime usage dashboard. Plain JavaScript, no dependencies: it calls the gateway's
// public usage APIs with the key typed into the page (kept in sessionStorage, i.e. this tab
// only) and draws its charts as inline SVG. It can show nothing the key may not read.
(function () {
  "use strict";

  var KEY = "btl.dashboard.key";
  var PAGE = 10;
  var LEVERS = [
    ["prompt_cache", "Prompt cache", "#1f9d6b"], ["response_cache", "Response cache", "#2f5fd0"],
    ["coalesce", "Coalescing", "#7a4fd0"], ["compression", "Compression", "#d8912b"],
    ["dedupe", "Dedupe", "#c2417a"], ["output_budget", "Output budget", "#3aa3b8"], ["routing", "Routing", "#8a8f2a"]
  ];
  var SVGNS = "http://www.w3.org/2000/svg";

  var $ = function (id) { return document.getElementById(id); };
  var state = { key: null, days: 30, from: "", cursors: [""], page: 0, next: "" };

  // ---- formatting -------------------------------------------------------------------------
  function usd(n) {
    var a = Math.abs(n), d = a >= 100 ? 2 : a >= 0.01 ? 4 : a === 0 ? 2 : 6;
    return (n < 0 ? "-$" : "$") + a.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }
  // money shows whole cents as such ($12.50), finer amounts as usd does.
  function money(n) { return Math.round(n * 100) === n * 100 ? "$" + Number(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : usd(n); }
  function int(n) { return Number(n).toLocaleString("en-US"); }
  function pct(x) { return (x * 100).toFixed(1) + "%"; }
  function ms(n) { return n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms"; }
  function dayString(d) { return d.toISOString().slice(0, 10); }
  function sumSavings(s) { var t = 0; LEVERS.forEach(function (l) { t += Number(s[l[0]] || 0); }); return t; }
  function inputTokens(t) { return t.input_uncached + t.cache_read + t.cache_write_5m + t.cache_write_1h; }

  // ---- DOM helpers --------------------------------------------------------------------------
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setStat(id, text, raw) { var e = $(id); e.textContent = text; e.setAttribute("data-value", String(raw)); }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function showError(msg) { var e = $("error"); e.textContent = msg; e.hidden = !msg; }
  function setLoading(msg) { $("loading").textContent = msg || ""; }

  // ---- API ----------------------------------------------------------------------------------
  function ApiError(status, message) { this.status = status; this.message = message; }
  function api(path, method, body) {
    var headers = { Authorization: "Bearer " + state.key };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method: method || "GET", headers: headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "omit" })
      .then(function (res) {
        return res.text().then(function (body) {
          var data = null;
          try { data = JSON.parse(body); } catch (e) { /* not JSON */ }
          if (!res.ok) {
            var msg = data && data.error && data.error.message ? data.error.message : "HTTP " + res.status;
            throw new ApiError(res.status, msg);
          }
          return data;
        });
      });
  }
  function rangeQuery() { return "from=" + encodeURIComponent(state.from); }

  // ---- charts -------------------------------------------------------------------------------
  var W = 640, H = 220, PL = 56, PR = 8, PT = 10, PB = 26;

  function axes(root, max, days, fmt) {
    for (var i = 0; i <= 4; i++) {
      var y = PT + (H - PT - PB) * (1 - i / 4);
      root.appendChild(svg("line", { x1: PL, x2: W - PR, y1: y, y2: y, "class": "grid" }));
      root.appendChild(svg("text", { x: PL - 6, y: y + 3, "text-anchor": "end" }, fmt(max * i / 4)));
    }
    var step = Math.max(1, Math.ceil(days.length / 8));
    days.forEach(function (d, i) {
      if (i % step !== 0 && i !== days.length - 1) return;
      var x = PL + (W - PL - PR) * (i + 0.5) / days.length;
      root.appendChild(svg("text", { x: x, y: H - 8, "text-anchor": "middle" }, d.slice(5)));
    });
  }
  function chartRoot(label) {
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label, preserveAspectRatio: "xMidYMid meet" });
    root.appendChild(svg("title", null, label));
    return root;
  }
  function axisMoney(v) { return v === 0 ? "$0" : v >= 100 ? "$" + Math.round(v) : v >= 1 ? "$" + v.toFixed(1) : "$" + v.toPrecision(2); }

  function drawSpend(days, byDay) {
    var box = $("chart-spend"); clear(box);
    var max = 0;
    days.forEach(function (d) { var g = byDay[d]; if (g) max = Math.max(max, g.cost_usd, g.baseline_usd); });
    var root = chartRoot("Daily actual cost and baseline over " + days.length + " days");
    if (max === 0) { root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "empty" }, "No spend in this period")); box.appendChild(root); return; }
    max *= 1.1;
    axes(root, max, days, axisMoney);
    var bw = (W - PL - PR) / days.length, ih = H - PT - PB, pts = [];
    days.forEach(function (d, i) {
      var g = byDay[d] || { cost_usd: 0, baseline_usd: 0 };
      var x = PL + bw * i, h = ih * g.cost_usd / max;
      var r = svg("rect", { x: x + bw * 0.15, y: PT + ih - h, width: Math.max(1, bw * 0.7), height: h, fill: "var(--c-cost)" });
      r.appendChild(svg("title", null, d + ": cost " + usd(g.cost_usd) + ", baseline " + usd(g.baseline_usd)));
      root.appendChild(r);
      pts.push((x + bw / 2).toFixed(1) + "," + (PT + ih - ih * g.baseline_usd / max).toFixed(1));
    });
    root.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", stroke: "var(--c-base)", "stroke-width": 2, "stroke-dasharray": "4 3" }));
    box.appendChild(root);
  }

  function drawSavings(days, byDay) {
    var box = $("chart-savings"); clear(box);
    var max = 0;
    days.forEach(function (d) { var g = byDay[d]; if (g) max = Math.max(max, sumSavings(g.savings_usd)); });
    var root = chartRoot("Savings per day, stacked by lever, over " + days.length + " days");
    if (max === 0) { root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "empty" }, "No savings recorded in this period")); box.appendChild(root); return; }
    max *= 1.1;
    axes(root, max, days, axisMoney);
    var bw = (W - PL - PR) / days.length, ih = H - PT - PB;
    days.forEach(function (d, i) {
      var g = byDay[d]; if (!g) return;
      var y = PT + ih;
      LEVERS.forEach(function (l) {
        var v = Number(g.savings_usd[l[0]] || 0); if (v <= 0) return;
        var h = ih * v / max; y -= h;
        var r = svg("rect", { x: PL + bw * i + bw * 0.15, y: y, width: Math.max(1, bw * 0.7), height: h, fill: l[2] });
        r.appendChild(svg("title", null, d + ": " + l[1] + " " + usd(v)));
        root.appendChild(r);
      });
    });
    box.appendChild(root);
  }

  function drawCache(t) {
    var box = $("chart-cache"); clear(box);
    var total = inputTokens(t), w = 640, h = 56;
    var root = svg("svg", { viewBox: "0 0 " + w + " " + h, role: "img", "aria-label": "Input tokens: " + int(t.input_uncached) + " uncached, " + int(t.cache_read) + " cache read, " + int(t.cache_write_5m + t.cache_write_1h) + " cache write" });
    if (total === 0) { root.appendChild(svg("text", { x: w / 2, y: 30, "text-anchor": "middle", "class": "empty" }, "No input tokens in this period")); box.appendChild(root); return; }
    var x = 0;
    [["input_uncached", "var(--c-uncached)", "Uncached"], ["cache_read", "var(--c-cacheread)", "Cache read"], ["cache_write", "var(--c-cachewrite)", "Cache write"]].forEach(function (p) {
      var v = p[0] === "cache_write" ? t.cache_write_5m + t.cache_write_1h : t[p[0]];
      if (v <= 0) return;
      var bw = w * v / total;
      var r = svg("rect", { x: x, y: 8, width: bw, height: 28, fill: p[1] });
      r.appendChild(svg("title", null, p[2] + ": " + int(v) + " tokens (" + pct(v / total) + ")"));
      root.appendChild(r);
      if (bw > 70) root.appendChild(svg("text", { x: x + 6, y: 52 }, p[2] + " " + pct(v / total)));
      x += bw;
    });
    box.appendChild(root);
  }

  // ---- tables -------------------------------------------------------------------------------
  function barCell(share, good) {
    var td = el("td", { "class": "bar-col" });
    var b = el("div", { "class": "bar" + (good ? " good" : "") });
    b.style.width = Math.max(0, Math.min(100, share * 100)).toFixed(1) + "%";
    td.appendChild(b);
    return td;
  }
  function fillTop(id, groups, empty) {
    var body = $(id).tBodies[0]; clear(body);
    groups = groups.slice().sort(function (a, b) { return b.cost_usd - a.cost_usd || b.requests - a.requests; }).slice(0, 8);
    var max = groups.reduce(function (m, g) { return Math.max(m, g.cost_usd); }, 0);
    if (!groups.length) { var tr = el("tr"); tr.appendChild(el("td", { colspan: 5, "class": "muted" }, empty)); body.appendChild(tr); return; }
    groups.forEach(function (g) {
      var tr = el("tr");
      tr.appendChild(el("td", null, g.key || "(none)"));
      tr.appendChild(el("td", { "class": "num" }, int(g.requests)));
      tr.appendChild(el("td", { "class": "num" }, usd(g.cost_usd)));
      tr.appendChild(el("td", { "class": "num" }, usd(g.saved_usd)));
      tr.appendChild(barCell(max > 0 ? g.cost_usd / max : 0));
      body.appendChild(tr);
    });
  }
  function fillLevers(s) {
    var body = $("levers").tBodies[0]; clear(body);
    var max = 0; LEVERS.forEach(function (l) { max = Math.max(max, Number(s[l[0]] || 0)); });
    LEVERS.forEach(function (l) {
      var v = Number(s[l[0]] || 0), tr = el("tr");
      var name = el("td"); var sw = el("i", { "class": "sw" }); sw.style.background = l[2]; name.appendChild(sw); name.appendChild(document.createTextNode(l[1]));
      tr.appendChild(name);
      tr.appendChild(el("td", { "class": "num" }, usd(v)));
      tr.appendChild(barCell(max > 0 ? v / max : 0, true));
      body.appendChild(tr);
    });
    var legend = $("savings-legend"); clear(legend);
    LEVERS.forEach(function (l) { var li = el("li"); var sw = el("i", { "class": "sw" }); sw.style.background = l[2]; li.appendChild(sw); li.appendChild(document.createTextNode(l[1])); legend.appendChild(li); });
  }
  function fillPrices(p) {
    var body = $("prices").tBodies[0]; clear(body);
    $("prices-asof").textContent = p.prices_as_of ? "as of " + p.prices_as_of : "";
    (p.data || []).forEach(function (e) {
      var tr = el("tr");
      tr.appendChild(el("td", null, e.model));
      tr.appendChild(el("td", null, (e.provider || "") + (e.upstream_model ? " / " + e.upstream_model : "")));
      [e.input_per_1m_usd, e.cached_input_per_1m_usd, e.cache_write_5m_per_1m_usd, e.cache_write_1h_per_1m_usd, e.output_per_1m_usd].forEach(function (v) {
        tr.appendChild(el("td", { "class": "num" }, usd(v)));
      });
      tr.appendChild(el("td", { "class": "num" }, e.context_window ? int(e.context_window) : "–"));
      body.appendChild(tr);
    });
  }
  function fillRequests(res) {
    var body = $("requests").tBodies[0]; clear(body);
    if (!res.data.length) { var tr0 = el("tr"); tr0.appendChild(el("td", { colspan: 12, "class": "muted" }, "No requests in this period")); body.appendChild(tr0); }
    res.data.forEach(function (r) {
      var tr = el("tr", { "data-request-id": r.request_id });
      var t = el("td", null, r.time.slice(0, 19).replace("T", " ")); t.title = r.request_id; tr.appendChild(t);
      tr.appendChild(el("td", null, r.model));
      tr.appendChild(el("td", null, r.provider ? r.provider + (r.upstream_model ? " / " + r.upstream_model : "") : "–"));
      tr.appendChild(el("td", { "class": "num" }, int(r.tokens.input_uncached)));
      tr.appendChild(el("td", { "class": "num" }, int(r.tokens.cache_read)));
      tr.appendChild(el("td", { "class": "num" }, int(r.tokens.cache_write_5m + r.tokens.cache_write_1h)));
      tr.appendChild(el("td", { "class": "num" }, int(r.tokens.output + r.tokens.reasoning)));
      tr.appendChild(el("td", { "class": "num" }, usd(r.cost_usd)));
      tr.appendChild(el("td", { "class": "num" }, usd(r.saved_usd)));
      tr.appendChild(el("td", { "class": "num" }, ms(r.latency_ms)));
      tr.appendChild(el("td", { "class": r.status < 400 ? "status-ok" : "status-err" }, String(r.status)));
      tr.appendChild(el("td", null, r.cache || "–"));
      body.appendChild(tr);
    });
    state.next = res.next_cursor || "";
    $("req-newer").disabled = state.page === 0;
    $("req-older").disabled = !state.next;
    $("req-page").textContent = "Page " + (state.page + 1);
  }

  // ---- loading ------------------------------------------------------------------------------
  function periodDays() {
    var days = [], now = new Date();
    var start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - (state.days - 1)));
    for (var i = 0; i < state.days; i++) days.push(dayString(new Date(start.getTime() + i * 86400000)));
    return days;
  }

  function loadRequests() {
    return api("/v1/usage/requests?limit=" + PAGE + "&" + rangeQuery() + "&cursor=" + encodeURIComponent(state.cursors[state.page]))
      .then(fillRequests);
  }

  // load shows what the key may read: usage (usage:read), key management and top-ups
  // (keys:write), or both. A key with neither is refused with the API's own message.
  function load() {
    showError(""); setLoading("Loading…");
    var refusedOK = function (p) {
      return p.then(function () { return null; }, function (err) {
        if (err instanceof ApiError && err.status === 403) return err;
        throw err;
      });
    };
    return Promise.all([refusedOK(loadUsage()), refusedOK(loadKeys())]).then(function (r) {
      if (r[0] && r[1]) throw r[0];
      $("dash").hidden = !!r[0];
      $("manage").hidden = !!r[1];
      $("period").hidden = $("period-label").hidden = !!r[0];
      $("signin").hidden = true; $("session").hidden = false;
      document.body.setAttribute("data-loaded", state.days);
      setLoading("");
    }).catch(failed);
  }

  function loadUsage() {
    var days = periodDays();
    state.from = days[0];
    state.cursors = [""]; state.page = 0;
    return Promise.all([
      api("/v1/usage/summary?group_by=day&" + rangeQuery()),
      api("/v1/usage/summary?group_by=model&" + rangeQuery()),
      api("/v1/usage/summary?group_by=provider&" + rangeQuery()),
      api("/v1/account/pricing"),
      loadRequests()
    ]).then(function (r) {
      var byDayRes = r[0], total = byDayRes.total, byDay = {};
      byDayRes.groups.forEach(function (g) { byDay[g.key] = g; });
      $("workspace").textContent = "Workspace " + byDayRes.workspace_id;
      setStat("stat-balance", usd(byDayRes.balance_usd), byDayRes.balance_usd);
      setStat("stat-spend", usd(total.cost_usd), total.cost_usd);
      setStat("stat-baseline", usd(total.baseline_usd), total.baseline_usd);
      setStat("stat-saved", usd(total.saved_usd), total.saved_usd);
      setStat("stat-requests", int(total.requests), total.requests);
      var input = inputTokens(total.tokens);
      setStat("stat-cacheshare", input ? pct(total.tokens.cache_read / input) : "–", input ? total.tokens.cache_read / input : 0);
      drawSpend(days, byDay);
      drawSavings(days, byDay);
      drawCache(total.tokens);
      fillLevers(total.savings_usd);
      fillTop("models", r[1].groups, "No requests in this period");
      fillTop("providers", r[2].groups, "No requests in this period");
      fillPrices(r[3]);
    });
  }

  // ---- API keys and top-ups (keys:write) ----------------------------------------------------
  function keyStatus(k) {
    if (k.revoked_at) return "revoked";
    if (k.expires_at && new Date(k.expires_at) <= new Date()) return "expired";
    return "active";
  }
  function limitsText(k) {
    var parts = [];
    if (k.rpm) parts.push(int(k.rpm) + " RPM");
    if (k.tpm) parts.push(int(k.tpm) + " TPM");
    return parts.length ? parts.join(" · ") : "–";
  }
  function budgetText(k) {
    if (k.budget_usd === null || k.budget_usd === undefined) return "–";
    return money(k.budget_usd) + (k.budget_period === "total" ? " in total" : " per " + k.budget_period);
  }
  function keysMessage(msg, isError) {
    $("keys-error").textContent = isError ? msg : ""; $("keys-error").hidden = !isError;
    $("keys-status").textContent = isError ? "" : msg;
  }

  function loadKeys() {
    return api("/v1/api-keys").then(fillKeys);
  }

  function fillKeys(res) {
    var body = $("keys").tBodies[0]; clear(body);
    res.data.forEach(function (k) {
      var st = keyStatus(k);
      var tr = el("tr", { "data-key-id": k.id, "data-status": st });
      tr.appendChild(el("td", null, k.name || "(unnamed)"));
      var id = el("td", null, k.prefix + "…"); id.title = k.id + (k.parent_id ? ", created by " + k.parent_id : ""); tr.appendChild(id);
      tr.appendChild(el("td", null, k.scopes.join(", ")));
      tr.appendChild(el("td", null, k.models.length ? k.models.join(", ") : "any"));
      tr.appendChild(el("td", null, limitsText(k)));
      tr.appendChild(el("td", null, budgetText(k)));
      tr.appendChild(el("td", null, k.expires_at ? k.expires_at.slice(0, 16).replace("T", " ") : "never"));
      tr.appendChild(el("td", { "class": st === "active" ? "status-ok" : "status-err" }, st));
      var actions = el("td");
      if (st === "active") {
        var b = el("button", { type: "button", "class": "secondary revoke", "aria-label": "Revoke key " + (k.name || k.prefix) }, "Revoke");
        b.addEventListener("click", function () { confirmRevoke(actions, k); });
        actions.appendChild(b);
      }
      tr.appendChild(actions);
      body.appendChild(tr);
    });
  }

  // confirmRevoke asks in place (no modal dialog), so the keyboard focus stays in the row.
  function confirmRevoke(cell, k) {
    clear(cell);
    var label = k.name || k.prefix;
    var yes = el("button", { type: "button", "class": "danger confirm-revoke" }, "Revoke " + label + " and keys it created");
    var no = el("button", { type: "button", "class": "secondary" }, "Cancel");
    yes.addEventListener("click", function () {
      yes.disabled = true;
      api("/v1/api-keys/" + encodeURIComponent(k.id), "DELETE").then(function () {
        return loadKeys().then(function () {
          keysMessage("Revoked key " + label + ".", false);
          $("keys-status").focus();
        });
      }).catch(function (err) {
        keysMessage(err.message || String(err), true);
        return loadKeys();
      }).catch(failed);
    });
    no.addEventListener("click", function () { loadKeys().catch(failed); });
    cell.appendChild(yes); cell.appendChild(document.createTextNode(" ")); cell.appendChild(no);
    yes.focus();
  }

  $("key-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = ev.target, req = { name: $("kf-name").value.trim(), scopes: [] };
    Array.prototype.forEach.call(f.querySelectorAll('input[name="scope"]:checked'), function (c) { req.scopes.push(c.value); });
    var models = $("kf-models").value.split(",").map(function (m) { return m.trim(); }).filter(Boolean);
    if (models.length) req.models = models;
    if (Number($("kf-rpm").value) > 0) req.rpm = Number($("kf-rpm").value);
    if (Number($("kf-tpm").value) > 0) req.tpm = Number($("kf-tpm").value);
    var budget = $("kf-budget").value.trim();
    if (budget) {
      if (!/^\d+(\.\d{1,6})?$/.test(budget)) { keysMessage("The budget must be a number of dollars, such as 25 or 2.50.", true); $("kf-budget").focus(); return; }
      req.budget_usd = Number(budget);
      req.budget_period = $("kf-period").value;
    }
    if ($("kf-expires").value) req.expires_in = Number($("kf-expires").value);
    $("kf-submit").disabled = true;
    api("/v1/api-keys", "POST", req).then(function (k) {
      f.reset();
      $("new-secret-value").value = k.key;
      $("new-secret").hidden = false;
      keysMessage("Created key " + (k.name || k.prefix) + ".", false);
      $("new-secret-value").focus();
      $("new-secret-value").select();
      return loadKeys();
    }).catch(function (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
      keysMessage(err.message || String(err), true);
    }).catch(failed).then(function () { $("kf-submit").disabled = false; });
  });
  $("new-secret-copy").addEventListener("click", function () {
    var v = $("new-secret-value");
    v.select();
    (navigator.clipboard ? navigator.clipboard.writeText(v.value) : Promise.reject(new Error("no clipboard")))
      .then(function () { keysMessage("Copied to the clipboard.", false); }, function () { keysMessage("Select the key and copy it (Ctrl+C).", false); });
  });
  $("new-secret-done").addEventListener("click", function () {
    $("new-secret-value").value = "";
    $("new-secret").hidden = true;
    $("kf-name").focus();
  });

  $("topup-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var amount = Number($("topup-amount").value);
    var out = $("topup-result"), errBox = $("topup-error");
    clear(out); errBox.hidden = true;
    $("topup-submit").disabled = true;
    api("/v1/account/top-ups", "POST", { amount_usd: amount }).then(function (res) {
      if (!/^https?:\/\//.test(res.url || "")) throw new Error("the payment provider returned no checkout address");
      out.appendChild(document.createTextNode("Checkout for " + money(res.amount_usd) + " is ready: "));
      var a = el("a", { href: res.url, id: "topup-link", rel: "noopener noreferrer" }, "continue to payment");
      out.appendChild(a);
      a.focus();
    }).catch(function (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
      errBox.textContent = err.message || String(err); errBox.hidden = false;
    }).catch(failed).then(function () { $("topup-submit").disabled = false; });
  });

  function failed(err) {
    setLoading("");
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      signOut();
      showError("Refused (" + err.status + "): " + err.message);
      return;
    }
    showError(err && err.message ? err.message : String(err));
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    state.key = null;
    $("dash").hidden = true; $("manage").hidden = true; $("session").hidden = true; $("signin").hidden = false;
    $("new-secret-value").value = ""; $("new-secret").hidden = true;
    document.body.removeAttribute("data-loaded");
    $("key").value = "";
    showError("");
    $("key").focus();
  }

  // ---- events -------------------------------------------------------------------------------
  $("signin-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var k = $("key").value.trim();
    if (!k) return;
    state.key = k;
    sessionStorage.setItem(KEY, k);
    $("key").value = "";
    load();
  });
  $("signout").addEventListener("click", signOut);
  $("refresh").addEventListener("click", function () { load(); });
  $("period").addEventListener("change", function () { state.days = Number($("period").value) || 30; load(); });
  $("req-older").addEventListener("click", function () {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next; state.page++;
    loadRequests().catch(failed);
  });
  $("req-newer").addEventListener("click", function () {
    if (state.page === 0) return;
    state.page--;
    loadRequests().catch(failed);
  });

  var saved = sessionStorage.getItem(KEY);
  if (saved) { state.key = saved; load(); } else { $("key").focus(); }
})();
