// The manifest's workloads (GET /api/workloads, served when the results app has --manifest): a
// navigation between the band contest (the default view, app.js) and each workload's own live
// view at #/w/<name>, drawn from its spec alone: bars per count aggregate (with shares in percent
// where the spec asks), a table of means per member, the total, the latest events, and a log
// search over its search fields. Names and values come from users, so every one is set as text
// (textContent), never as markup. Uses app.js's helpers ($, cell, fillTable, tableRows, barChart,
// follow, connect, disconnect, isWorkloadHash, queryFromForm, numberFormat).
'use strict';

const workloadPage = { list: [], events: null };

function element(tag, attributes = {}, text = undefined) {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, String(value));
  if (text !== undefined) made.textContent = text;
  return made;
}

function memberLabel(values) {
  return values.join(' · ');
}

function headRow(table, names) {
  const row = element('tr');
  row.append(...names.map((name) => element('th', name.className ? { class: name.className } : {}, name.text ?? name)));
  table.tHead.replaceChildren(row);
}

function table(id, headings) {
  const made = element('table', { id });
  made.append(element('thead'), element('tbody'));
  headRow(made, headings);
  return made;
}

function section(title, ...children) {
  const made = element('section');
  made.append(element('h2', {}, title), ...children);
  return made;
}

/** The fields of a list of event data objects, in first-seen order (at most 32). */
function fieldsOf(datas) {
  const fields = [];
  for (const data of datas) {
    for (const name of Object.keys(data || {})) if (!fields.includes(name) && fields.length < 32) fields.push(name);
  }
  return fields;
}

function text(value) {
  return value === undefined || value === null ? '' : String(value);
}

/** Builds the view of `spec` into #workload-view (empty until its first snapshot). */
function buildWorkload(spec) {
  const view = $('workload-view');
  const cards = element('section', { class: 'cards' });
  const totalCard = element('div', { class: 'card' });
  totalCard.append(element('div', { class: 'label' }, 'total events'), element('div', { id: 'w-total', class: 'big' }, '–'));
  const updatedCard = element('div', { class: 'card' });
  updatedCard.append(element('div', { class: 'label' }, 'updated'), element('div', { id: 'w-updated', class: 'small' }, '–'));
  cards.append(totalCard, updatedCard);
  const parts = [element('h2', { id: 'w-title', class: 'view-title' }, spec.title), cards];
  for (const count of spec.counts) {
    const chart = document.createElementNS(SVG, 'svg');
    chart.setAttribute('id', `w-count-${count.name}`);
    chart.setAttribute('class', 'chart');
    chart.setAttribute('role', 'img');
    chart.setAttribute('aria-label', count.title);
    const note = element('p', { id: `w-count-${count.name}-note`, class: 'label' });
    parts.push(section(count.title, chart, note));
  }
  if (spec.means.length > 0) {
    const columns = element('section', { class: 'columns' });
    for (const mean of spec.means) {
      const holder = element('div');
      holder.append(element('h2', {}, mean.title), table(`w-mean-${mean.name}`, [...mean.by, { text: 'mean', className: 'num' }, { text: 'events', className: 'num' }]));
      columns.append(holder);
    }
    parts.push(columns);
  }
  parts.push(section('Latest events', table('w-recent', ['time'])));

  const form = element('form', { id: 'w-search-form' });
  for (const field of spec.search) {
    const label = element('label', {}, field);
    label.append(element('input', { name: field, maxlength: 256 }));
    form.append(label);
  }
  const perPage = element('label', {}, 'per page');
  const limit = element('select', { name: 'limit' });
  for (const size of [10, 25, 100]) {
    const option = element('option', {}, String(size));
    if (size === 25) option.selected = true;
    limit.append(option);
  }
  perPage.append(limit);
  form.append(perPage, element('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    searchWorkload(spec, queryFromForm(form)).catch((e) => { $('w-search-status').textContent = String(e); });
  });
  parts.push(section('Search the event logs', form, element('p', { id: 'w-search-status', class: 'label' }), table('w-log-results', ['received'])));
  view.replaceChildren(...parts);
}

/** Shows one snapshot of `spec`'s view. */
function renderWorkload(spec, snapshot) {
  $('w-total').textContent = numberFormat.format(snapshot.total);
  $('w-updated').textContent = new Date(snapshot.read_at_ms).toLocaleTimeString();
  for (const count of snapshot.counts) {
    const chart = $(`w-count-${count.name}`);
    if (!chart) continue;
    const rows = count.members.map((m) => ({ label: memberLabel(m.values), value: m.count, note: m.share === undefined ? '' : `${m.share.toFixed(1)}%` }));
    barChart(chart, rows, 'member', 'nothing counted yet');
    const notes = [];
    if (count.share) notes.push(`shares are of each ${count.by.length > 1 ? count.by.slice(0, -1).join(' · ') : 'total'}`);
    notes.push(`${count.members.length} of ${numberFormat.format(count.size)} shown`);
    if (count.overflow > 0) notes.push(`${numberFormat.format(count.overflow)} events beyond the cap of members`);
    $(`w-count-${count.name}-note`).textContent = notes.join(' · ');
  }
  for (const mean of snapshot.means) {
    const meanTable = $(`w-mean-${mean.name}`);
    if (!meanTable) continue;
    fillTable(meanTable, mean.members.map((m) => [...m.values.map((v) => cell(v)), cell(m.mean.toFixed(1), 'num'), cell(numberFormat.format(m.samples), 'num')]));
  }
  const recent = $('w-recent');
  const fields = fieldsOf(snapshot.recent.map((e) => e.data));
  headRow(recent, ['time', ...fields]);
  fillTable(recent, snapshot.recent.map((e) => [cell(timeOf(e.received_at_ms), 'nowrap'), ...fields.map((f) => cell(text(e.data && e.data[f])))]));
}

async function searchWorkload(spec, params) {
  const status = $('w-search-status');
  status.className = 'label';
  status.textContent = 'searching…';
  const response = await fetch(`/api/workloads/${encodeURIComponent(spec.name)}/logs?${params}`);
  const body = await response.json();
  if (!response.ok) {
    status.className = 'label error';
    // The error names its field first.
    status.textContent = body.error;
    return;
  }
  const results = $('w-log-results');
  const fields = fieldsOf(body.items.map((e) => e.data));
  headRow(results, ['received', ...fields, 'producer', 'event id']);
  fillTable(results, body.items.map((e) => [
    cell(new Date(e.received_at).toLocaleString(), 'nowrap'), ...fields.map((f) => cell(text(e.data[f]))), cell(e.producer), cell(e.id, 'id'),
  ]));
  const shown = body.items.length;
  status.textContent = `${shown} event${shown === 1 ? '' : 's'} shown${body.more ? ', more match (narrow the search)' : ''}`;
}

function stopWorkload() {
  if (workloadPage.events) workloadPage.events.close();
  workloadPage.events = null;
}

/** Shows the view the address names: a counted workload's, or the band contest. */
function route() {
  const name = isWorkloadHash() ? decodeURIComponent(window.location.hash.slice(4)) : null;
  const spec = workloadPage.list.find((w) => w.name === name && w.format === 'json');
  stopWorkload();
  for (const link of $('workload-nav').querySelectorAll('a')) {
    link.classList.toggle('active', spec ? link.dataset.workload === spec.name : link.dataset.format !== 'json');
  }
  if (!spec) {
    $('workload-view').hidden = true;
    $('workload-view').replaceChildren();
    $('votes-view').hidden = false;
    connect();
    return;
  }
  disconnect();
  $('votes-view').hidden = true;
  buildWorkload(spec);
  $('workload-view').hidden = false;
  workloadPage.events = follow(`/api/workloads/${encodeURIComponent(spec.name)}/events`, (snapshot) => renderWorkload(spec, snapshot));
}

async function loadWorkloads() {
  const response = await fetch('/api/workloads');
  if (!response.ok) {
    // No manifest: only the band contest.
    if (isWorkloadHash()) connect();
    return;
  }
  // The band contest (the default view) first, then the others by name.
  workloadPage.list = (await response.json()).workloads.sort((a, b) => (a.format === 'json') - (b.format === 'json') || a.name.localeCompare(b.name));
  const nav = $('workload-nav');
  nav.replaceChildren(...workloadPage.list.map((w) => {
    const link = element('a', { href: w.format === 'json' ? `#/w/${encodeURIComponent(w.name)}` : '#', 'data-workload': w.name, 'data-format': w.format }, w.title);
    return link;
  }));
  nav.hidden = false;
  window.addEventListener('hashchange', route);
  route();
}

loadWorkloads().catch(() => { if (isWorkloadHash()) connect(); });
