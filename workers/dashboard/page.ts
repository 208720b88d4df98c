/**
 * The page: one HTML document with its own small script, updated from `/api/events` (SSE) without
 * reloads. No build step and no third-party script; the chart is an inline SVG.
 */
const STYLE = `
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--accent:#2563eb;--ok:#16a34a;--bad:#dc2626;--warn:#d97706}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{display:flex;align-items:center;gap:16px;padding:12px 24px;background:#111827;color:#fff}
header h1{font-size:18px;margin:0}header a{color:#cbd5e1;text-decoration:none;margin-left:auto}header .live{font-size:12px;color:#94a3b8}
main{max-width:1280px;margin:0 auto;padding:20px 24px;display:grid;grid-template-columns:minmax(0,1fr) 320px;gap:20px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:16px}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:0 0 10px}
.job{border-top:1px solid var(--line);padding:12px 0}.job:first-of-type{border-top:0}
.job-head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}.job-id{font-weight:600;font-family:ui-monospace,monospace}
.state{font-size:12px;padding:1px 8px;border-radius:999px;background:#e0e7ff;color:#3730a3}
.state.completed{background:#dcfce7;color:#166534}.state.failed{background:#fee2e2;color:#991b1b}.state.cancelled{background:#f1f5f9;color:#475569}.state.queued{background:#fef3c7;color:#92400e}
.paths{color:var(--muted);font-size:12px;overflow-wrap:anywhere}
.bar.unknown .bar-fill{width:100%!important;background:repeating-linear-gradient(45deg,#c7d2fe 0 8px,#e0e7ff 8px 16px)}
.bar{height:10px;background:#eef2f7;border-radius:5px;overflow:hidden;margin:8px 0}.bar-fill{height:100%;background:var(--accent);transition:width .6s}
.completed .bar-fill{background:var(--ok)}.failed .bar-fill{background:var(--bad)}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:6px 14px;font-size:13px}
.figures b{display:block;font-size:11px;color:var(--muted);font-weight:500}
.model{margin:8px 0 2px;font-weight:600}.chart-box{margin-top:8px}.chart-box span{display:block;text-align:right;font-size:11px;color:var(--muted)}
.chart{width:100%;height:60px;display:block;background:linear-gradient(#f8fafc,#fff);border-bottom:1px solid var(--line)}.chart polyline{fill:none;stroke:var(--accent);stroke-width:1.5}
.errors{margin:8px 0 0;padding:8px;background:#fff7ed;border-radius:6px;font:12px ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
.actions button{font:inherit;font-size:12px;padding:2px 10px;border:1px solid var(--line);border-radius:6px;background:#fff;cursor:pointer}
table{width:100%;border-collapse:collapse;font-size:13px}td,th{text-align:left;padding:4px 2px;border-top:1px solid var(--line)}th{color:var(--muted);font-weight:500}
td.num,th.num{text-align:right}.empty{color:var(--muted)}
`;

const SCRIPT = `
const $ = (s) => document.querySelector(s);
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const num = (v, d = 0) => Number(v).toLocaleString('en-US', {maximumFractionDigits: d, minimumFractionDigits: d});
const dur = (s) => s == null ? '–' : s < 60 ? Math.round(s) + ' s' : s < 3600 ? Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s' : (s / 3600).toFixed(1) + ' h';
const time = (t) => t ? new Date(t).toLocaleString() : '–';
function chart(history) {
  if (history.length < 2) return '<div class="chart-box"><svg class="chart"></svg></div>';
  const max = Math.max(1, ...history.map((p) => p[1])), t0 = history[0][0], t1 = history[history.length - 1][0];
  const pts = history.map(([t, v]) => ((t - t0) / Math.max(1, t1 - t0) * 600).toFixed(1) + ',' + (58 - v / max * 54).toFixed(1)).join(' ');
  return '<div class="chart-box"><span>lines/s · peak ' + num(max) + '</span><svg class="chart" viewBox="0 0 600 60" preserveAspectRatio="none"><polyline vector-effect="non-scaling-stroke" points="' + pts + '"/></svg></div>';
}
function job(j) {
  const pct = j.progress == null ? 0 : j.progress * 100;
  const total = j.linesTotal == null ? num(j.linesRead) + ' read' : num(j.linesTotal);
  const label = j.finishing ? 'finishing' : j.state;
  const actions = j.finishing ? '' : (j.state === 'queued' || j.state === 'running') ? '<button data-act="cancel">cancel</button>' : (j.state === 'failed' || j.state === 'cancelled') ? '<button data-act="retry">retry</button>' : '';
  const errs = j.error ? '<div class="errors">' + esc(j.errorCode + ': ' + j.error) + '</div>' : '';
  const retry = j.lastRetry && (j.state === 'queued' || j.state === 'running') ? '<div class="errors retry">retrying ' + esc(j.lastRetry) + ' (' + time(j.lastRetryAt) + ')</div>' : '';
  // As status says it: the job does not move until a live worker's stalled check takes them back.
  const stalled = j.stalledSteps ? '<div class="errors stalled">stalled: ' + (j.stalledSteps === 1 ? '1 step is' : num(j.stalledSteps) + ' steps are') + ' held by a worker that stopped (killed, or frozen past EMBEDQ_LOCK_DURATION_MS); a live worker takes ' + (j.stalledSteps === 1 ? 'it' : 'them') + ' back at its next stalled check</div>' : '';
  // source:line as messages write it, 1-based; the record's line (as in _errors.jsonl) is 0-based.
  // A message that starts with it already (the reader's, the provider's refusals) is not repeated after it.
  const rec = (e) => { const at = e.source + ':' + (e.line + 1); return 'row ' + e.row + ' ' + at + ' ' + e.code + ' ' + (e.message.startsWith(at + ': ') ? e.message.slice(at.length + 2) : e.message); };
  const recs = j.firstErrors.length ? '<div class="errors">' + j.firstErrors.map((e) => esc(rec(e))).join('\\n') + '</div>' : '';
  return '<div class="job ' + esc(j.state) + '" data-job-id="' + esc(j.id) + '">' +
    '<div class="job-head"><span class="job-id">' + esc(j.id) + '</span><span class="state ' + esc(j.state) + '">' + esc(label) + '</span>' +
    (j.schedule ? '<span class="paths">schedule ' + esc(j.schedule) + '</span>' : '') + '<span class="actions">' + actions + '</span></div>' +
    '<div class="paths">' + esc(j.input) + ' → ' + esc(j.output) + ' · ' + esc(j.model) + ' · ' + esc(j.dimension) + '</div>' +
    '<div class="bar' + (j.progress == null ? ' unknown' : '') + '" role="progressbar" aria-valuenow="' + pct.toFixed(1) + '"><div class="bar-fill" style="width:' + pct.toFixed(2) + '%"></div></div>' +
    '<div class="figures">' +
    '<div><b>lines</b><span class="lines">' + num(j.linesDone) + ' / ' + total + '</span>' + (j.progress == null ? '' : ' (' + pct.toFixed(1) + '%)') + '</div>' +
    '<div><b>now</b>' + num(j.throughputNow) + ' lines/s</div><div><b>average</b>' + num(j.throughputAverage) + ' lines/s</div>' +
    '<div><b>ETA</b>' + dur(j.etaSeconds) + '</div><div><b>tokens</b>' + num(j.tokens) + '</div>' +
    '<div><b>est. cost</b>$' + num(j.estimatedCostUsd, 4) + '</div><div><b>429 share</b>' + num(j.throttledShare * 100, 2) + '% of ' + num(j.requests) + '</div>' +
    '<div><b>shards</b>' + num(j.shardsWritten) + (j.totalShards == null ? '' : ' / ' + num(j.totalShards)) + '</div>' +
    '<div><b>failed · blank</b>' + num(j.failed) + ' · ' + num(j.blank) + '</div></div>' + chart(j.history) + errs + retry + stalled + recs + '</div>';
}
function rows(list, empty, cols, cells) {
  if (!list.length) return '<p class="empty">' + empty + '</p>';
  return '<table><tr>' + cols.map((c) => '<th' + (c.endsWith('#') ? ' class="num">' + c.slice(0, -1) : '>' + c) + '</th>').join('') + '</tr>' +
    list.map((x) => '<tr>' + cells(x).map((c, i) => '<td' + (cols[i].endsWith('#') ? ' class="num"' : '') + '>' + c + '</td>').join('') + '</tr>').join('') + '</table>';
}
function render(s) {
  $('#jobs').innerHTML = s.jobs.length ? s.jobs.map(job).join('') : '<p class="empty">No corpus jobs yet. Submit one with <code>embedq submit</code>.</p>';
  const pm = (v) => v ? (v.requests == null ? '–' : num(v.requests)) + '<br><span class="paths">' + (v.tokens == null ? '–' : num(v.tokens)) + '</span>' : '–';
  // Read with the live workers' settings when they agree; else the dashboard's own, which may not be theirs.
  const pacedBy = { 'no-live-worker': 'no live worker: by the dashboard settings', 'workers-differ': 'workers differ: by the dashboard settings', 'workers-unknown': 'workers of an older version: by the dashboard settings' };
  $('#rates').innerHTML = s.rates.map((r) => '<p class="model">' + esc(r.model) + (pacedBy[r.pacedBy] ? ' <span class="paths">' + pacedBy[r.pacedBy] + '</span>' : '') + '</p>' + rows([['configured', r.configured], ['learned', r.learned], ['in force', r.inForce]], '',
    ['per minute', 'requests · tokens#'], ([k, v]) => [k, pm(v)])).join('');
  // The legacy queue (steps an older version's worker handed back) only while it holds some.
  const queues = Object.entries(s.queues).filter(([q, d]) => q !== 'embed' || d.waiting + d.prioritized + d.delayed + d.active > 0);
  $('#queues').innerHTML = rows(queues, '', ['queue', 'waiting#', 'prior.#', 'delayed#', 'active#'], ([q, d]) => [esc(q === 'embed' ? 'embed (older version)' : q), num(d.waiting), num(d.prioritized), num(d.delayed), num(d.active)]);
  $('#workers').innerHTML = rows(s.workers, 'No live workers.', ['worker', 'conc.#', 'seen#'], (w) => [esc(w.id), num(w.concurrency), w.ageSeconds + ' s ago']);
  $('#schedules').innerHTML = rows(s.schedules, 'No schedules.', ['name', 'next', 'last', 'runs / skipped'], (x) => [esc(x.name) + '<br><span class="paths">' + esc(x.cron) + ' ' + esc(x.tz) + '</span>', x.paused_at ? 'paused' : x.next_run ? time(Date.parse(x.next_run)) : '–', x.last_run ? esc(x.last_run.job_id) + ' ' + esc(x.last_run.state) : '–', x.runs + ' / ' + x.skipped + (x.missed ? ' · ' + x.missed + ' missed' : '') + (x.last_error ? '<br><span class="paths">' + esc(x.last_error) + '</span>' : '')]);
  $('#redis').hidden = !s.redisProblem;
  $('#redis').textContent = s.redisProblem ? 'Redis: ' + s.redisProblem : '';
  $('#fleet').hidden = !s.fleetProblem;
  $('#fleet').textContent = s.fleetProblem ? 'Workers: ' + s.fleetProblem : '';
  $('#updated').textContent = 'updated ' + new Date(s.at).toLocaleTimeString();
}
document.addEventListener('click', async (e) => {
  const b = e.target.closest('button[data-act]'); if (!b) return;
  const id = b.closest('[data-job-id]').dataset.jobId;
  b.disabled = true;
  const r = await fetch('/api/jobs/' + encodeURIComponent(id) + '/' + b.dataset.act, {method: 'POST'});
  if (!r.ok) alert((await r.json()).error);
});
// The browser reconnects by itself after a dropped connection, but gives up for good on any answer
// other than 200 (a proxy's 502 while the dashboard restarts, a 401 once the token changed): the
// page then said "reconnecting…" forever. It connects again itself, and signs in again on a 401.
let retryMs = 1000;
function connect() {
  const events = new EventSource('/api/events');
  events.onopen = () => { retryMs = 1000; };
  events.onmessage = (m) => render(JSON.parse(m.data));
  events.onerror = () => {
    $('#updated').textContent = 'reconnecting…';
    if (events.readyState !== EventSource.CLOSED) return;
    setTimeout(async () => {
      const probe = await fetch('/api/workers', {headers: {accept: 'application/json'}}).catch(() => undefined);
      if (probe && probe.status === 401) return location.reload();
      connect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  };
}
connect();
`;

export function dashboardPage(): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>embedq dashboard</title><style>${STYLE}</style></head><body>
<header><h1>embedq</h1><span class="live" id="updated">connecting…</span><a href="/queues">Bull Board →</a><a href="/metrics" style="margin-left:12px">/metrics</a></header>
<main><div><div class="errors" id="redis" role="alert" hidden></div><div class="errors" id="fleet" role="alert" hidden></div><section><h2>Corpus jobs</h2><div id="jobs"></div></section></div>
<aside><section><h2>Rate gate</h2><div id="rates"></div></section><section><h2>Queues</h2><div id="queues"></div></section>
<section><h2>Live workers</h2><div id="workers"></div></section><section><h2>Schedules</h2><div id="schedules"></div></section></aside></main>
<script>${SCRIPT}</script></body></html>`;
}

export function loginPage(next: string, failed = false): string {
  // Escaped, not stripped: a query's `&` must survive the round trip through the form.
  const escaped = next.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>embedq dashboard: sign in</title><style>${STYLE}
form{max-width:360px;margin:12vh auto;background:#fff;border:1px solid var(--line);border-radius:10px;padding:24px}input{width:100%;padding:8px;margin:8px 0;font:inherit}</style></head>
<body><form method="post" action="/login"><h2>embedq dashboard</h2><label>Token (EMBEDQ_DASHBOARD_TOKEN)<input type="password" name="token" autofocus></label>
<input type="hidden" name="next" value="${escaped}">${failed ? '<p style="color:var(--bad)">Wrong token.</p>' : ''}<button type="submit">Sign in</button></form></body></html>`;
}
