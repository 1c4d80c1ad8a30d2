// The results page: renders each snapshot the server pushes over /api/events (server-sent
// events; the browser reconnects by itself) and runs the log search against /api/logs.
// Every name comes from voters, so text is only ever set with textContent, never as markup.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const MAX_BANDS_IN_CHART = 15;
const numberFormat = new Intl.NumberFormat();

function $(id) { return document.getElementById(id); }

function svg(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function tableRows(rows) {
  return rows.map((cells) => {
    const tr = document.createElement('tr');
    tr.append(...cells);
    return tr;
  });
}

function fillTable(table, rows) {
  table.tBodies[0].replaceChildren(...tableRows(rows));
}

function timeOf(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : '';
}

function countOf(counts, name) {
  const found = counts.find((c) => c.name === name);
  return found ? found.votes : 0;
}

function renderSplit(paths) {
  const wasm = countOf(paths, 'wasm');
  const grpc = countOf(paths, 'grpc');
  $('path-wasm').textContent = numberFormat.format(wasm);
  $('path-grpc').textContent = numberFormat.format(grpc);
  const both = wasm + grpc;
  const wasmWidth = both ? (300 * wasm) / both : 0;
  $('split').replaceChildren(
    svg('rect', { class: 'wasm', x: 0, y: 0, width: wasmWidth, height: 16 }),
    svg('rect', { class: 'grpc', x: wasmWidth, y: 0, width: both ? 300 - wasmWidth : 0, height: 16 }),
  );
  $('split-share').textContent = both
    ? `wasm ${((100 * wasm) / both).toFixed(1)}% · gRPC ${((100 * grpc) / both).toFixed(1)}%`
    : 'no votes yet';
}

/**
 * Draws horizontal bars into the SVG `chart`: one per row {label, value, note}, the label (cut
 * short, whole in its <title>) in a text of class `labelClass`, the value in `text.count`, the
 * note (a share, say) in `text.note`.
 */
function barChart(chart, rows, labelClass, emptyText) {
  const rowHeight = 26;
  const labelWidth = 260;
  const width = Math.max(chart.clientWidth || 900, 500);
  const barSpace = width - labelWidth - 140;
  const max = Math.max(1, ...rows.map((r) => r.value));
  chart.setAttribute('viewBox', `0 0 ${width} ${Math.max(1, rows.length) * rowHeight + 10}`);
  chart.setAttribute('height', Math.max(1, rows.length) * rowHeight + 10);
  const children = [];
  rows.forEach((row, i) => {
    const y = 5 + i * rowHeight;
    const label = svg('text', { x: labelWidth - 8, y: y + 17, 'text-anchor': 'end', class: labelClass });
    label.textContent = row.label.length > 38 ? `${row.label.slice(0, 37)}…` : row.label;
    const title = svg('title', {});
    title.textContent = row.label;
    label.append(title);
    const barWidth = Math.max(1, (barSpace * row.value) / max);
    const count = svg('text', { x: labelWidth + barWidth + 6, y: y + 17, class: 'count' });
    count.textContent = numberFormat.format(row.value);
    children.push(label, svg('rect', { class: 'bar', x: labelWidth, y: y + 3, width: barWidth, height: rowHeight - 8, rx: 3 }), count);
    if (row.note) {
      const note = svg('text', { x: labelWidth + barWidth + 14 + 8 * count.textContent.length, y: y + 17, class: 'note' });
      note.textContent = row.note;
      children.push(note);
    }
  });
  if (rows.length === 0) {
    const empty = svg('text', { x: 12, y: 22 });
    empty.textContent = emptyText;
    children.push(empty);
  }
  chart.replaceChildren(...children);
}

function renderBands(bands) {
  const rows = bands.slice(0, MAX_BANDS_IN_CHART).map((band) => ({ label: band.name, value: band.votes }));
  barChart($('band-chart'), rows, 'band', 'no votes yet');
}

function render(snapshot) {
  $('total').textContent = numberFormat.format(snapshot.total);
  $('updated').textContent = new Date(snapshot.read_at_ms).toLocaleTimeString();
  renderSplit(snapshot.paths);
  renderBands(snapshot.bands);
  fillTable($('albums'), snapshot.top_albums.map((a) => [cell(a.band), cell(a.album), cell(numberFormat.format(a.votes), 'num')]));
  fillTable($('recent'), snapshot.recent.map((v) => [cell(timeOf(v.received_at_ms), 'nowrap'), cell(v.name), cell(v.album), cell(v.path, 'nowrap')]));
}

/** Follows the snapshots of `url` with `onSnapshot`, showing the stream's state; returns the stream. */
function follow(url, onSnapshot) {
  const status = $('live-status');
  const events = new EventSource(url);
  events.addEventListener('snapshot', (event) => onSnapshot(JSON.parse(event.data)));
  events.onopen = () => { status.textContent = 'live'; status.className = 'status live'; };
  events.onerror = () => { status.textContent = 'reconnecting…'; status.className = 'status connecting'; };
  return events;
}

let bandEvents = null;

/** Shows the band contest live (the default view). */
function connect() {
  if (!bandEvents) bandEvents = follow('/api/events', render);
}

/** Stops the band contest's stream while another view is shown. */
function disconnect() {
  if (bandEvents) bandEvents.close();
  bandEvents = null;
}

/** Whether the address names a workload's view (#/w/<name>, see workloads.js). */
function isWorkloadHash() {
  return window.location.hash.startsWith('#/w/');
}

// ---- log search ----

let lastQuery = null;

function queryFromForm(form) {
  const params = new URLSearchParams();
  for (const [name, raw] of new FormData(form)) {
    const value = String(raw).trim();
    if (!value) continue;
    // datetime-local is the browser's local time; the API takes RFC 3339.
    params.set(name, name === 'from' || name === 'to' ? new Date(value).toISOString() : value);
  }
  return params;
}

async function search(params, append) {
  const status = $('search-status');
  status.className = 'label';
  status.textContent = 'searching…';
  const response = await fetch(`/api/logs?${params}`);
  const body = await response.json();
  if (!response.ok) {
    status.className = 'label error';
    // The error names its field first.
    status.textContent = body.error;
    return;
  }
  const rows = body.items.map((v) => [
    cell(new Date(v.received_at).toLocaleString(), 'nowrap'), cell(v.name), cell(v.album), cell(String(v.year), 'num'),
    cell(String(v.rank), 'num'), cell(v.path, 'nowrap'), cell(v.producer), cell(v.vote_id, 'id'),
  ]);
  const table = $('log-results');
  if (append) table.tBodies[0].append(...tableRows(rows));
  else fillTable(table, rows);
  const shown = table.tBodies[0].rows.length;
  status.textContent = `${shown} vote${shown === 1 ? '' : 's'} shown${body.next_cursor ? ', more on the next page' : ''}`;
  const next = $('next-page');
  next.hidden = !body.next_cursor;
  lastQuery = null;
  if (body.next_cursor) {
    lastQuery = new URLSearchParams(params);
    lastQuery.set('cursor', body.next_cursor);
  }
}

function setUpSearch() {
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    search(queryFromForm(event.target), false).catch((e) => { $('search-status').textContent = String(e); });
  });
  $('next-page').addEventListener('click', () => {
    if (lastQuery) search(lastQuery, true).catch((e) => { $('search-status').textContent = String(e); });
  });
}

if (!isWorkloadHash()) connect();
setUpSearch();
