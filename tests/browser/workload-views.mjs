// Drives the workload views of the results page in a real headless Chromium (Debian's
// /usr/bin/chromium) for the e2e test crates/e2e/tests/workload_views.rs, which writes the counts
// into Redis and talks to this script over stdin/stdout, one line per step:
//   node workload-views.mjs <results url> <screenshot directory>
//   env EXPECTED: JSON {weather: {total, municipality: {name: count}, temperature: {name: mean},
//                                 shares: {label: "50.0%"}},
//                       ballots: {total, polling_place: {name: count}, shares: {label: "50.0%"},
//                                 search: {departamento, rows}}, xss}
// Steps: open #/w/weather, check it shows EXPECTED -> "ready weather" -> the test counts more
// reports and writes "weather <total> <mixco count>" -> wait for the page to move without a
// reload -> "moved weather" -> the nav to the ballots view: check it -> "ready ballots" -> the
// test counts more and writes "ballots <total> <Guatemala presidential ballots>" -> wait -> a
// log search -> the markup polling place is text, no dialog fired -> the band contest is still
// the default view -> screenshots -> "ok".
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [resultsUrl, screenshotDir] = process.argv.slice(2);
const expected = JSON.parse(process.env.EXPECTED);
const TIMEOUT = 20_000;

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function nextLine(prefix) {
  const { value, done } = await lines.next();
  if (done) throw new Error('the test closed stdin');
  const words = value.trim().split(' ');
  if (words[0] !== prefix) fail(`expected a "${prefix}" line from the test, got ${value}`);
  return words.slice(1).map(Number);
}

function fail(message) {
  throw new Error(message);
}

async function waitFor(page, what, check, arg) {
  await page.waitForFunction(check, arg, { timeout: TIMEOUT }).catch(async () => {
    fail(`${what}: the page shows ${JSON.stringify(await page.evaluate(() => document.getElementById('workload-view').innerText.slice(0, 1500)))}`);
  });
}

/** Waits until #w-total shows `want`. */
async function waitForTotal(page, want) {
  await waitFor(page, `total ${want}`, (want) => {
    const total = document.getElementById('w-total');
    return total && Number(total.textContent.replace(/[^0-9]/g, '')) === want;
  }, want);
}

/** The bars of the chart #w-count-<name> as {label: {count, note}}, read from its SVG texts. */
async function bars(page, name) {
  return page.evaluate((id) => {
    const found = {};
    for (const label of document.querySelectorAll(`#${id} text.member`)) {
      const count = label.nextElementSibling.nextElementSibling;
      const note = count.nextElementSibling && count.nextElementSibling.classList.contains('note') ? count.nextElementSibling.textContent : '';
      found[label.querySelector('title').textContent] = { count: Number(count.textContent.replace(/[^0-9]/g, '')), note };
    }
    return found;
  }, `w-count-${name}`);
}

async function waitForBar(page, name, label, count) {
  await waitFor(page, `${name} ${label} ${count}`, ([id, label, count]) => {
    for (const text of document.querySelectorAll(`#${id} text.member`)) {
      if (text.querySelector('title').textContent === label) {
        return Number(text.nextElementSibling.nextElementSibling.textContent.replace(/[^0-9]/g, '')) === count;
      }
    }
    return false;
  }, [`w-count-${name}`, label, count]);
}

/** The rows of a table as arrays of cell texts. */
async function rows(page, id) {
  return page.evaluate((id) => [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) => [...tr.cells].map((td) => td.textContent)), id);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  const dialogs = [];
  page.on('dialog', (dialog) => { dialogs.push(dialog.message()); dialog.dismiss().catch(() => {}); });
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));

  // 1. The weather view shows what Redis holds.
  await page.goto(`${resultsUrl}#/w/weather`);
  const weather = expected.weather;
  await waitForTotal(page, weather.total);
  const municipalities = await bars(page, 'municipality');
  for (const [name, count] of Object.entries(weather.municipality)) {
    if (municipalities[name]?.count !== count) fail(`municipality ${name}: page shows ${JSON.stringify(municipalities[name])}, Redis holds ${count}`);
  }
  const temperatures = Object.fromEntries((await rows(page, 'w-mean-temperature')).map((row) => [row[0], row[1]]));
  for (const [name, mean] of Object.entries(weather.temperature)) {
    if (temperatures[name] !== mean) fail(`mean temperature of ${name}: page shows ${temperatures[name]}, expected ${mean}`);
  }
  const conditions = await bars(page, 'municipality_weather');
  for (const [label, share] of Object.entries(weather.shares)) {
    if (conditions[label]?.note !== share) fail(`the share of ${label} reads ${JSON.stringify(conditions[label])}, expected ${share}`);
  }
  if ((await rows(page, 'w-recent')).length !== weather.total) fail('the latest reports are not all listed');
  await page.waitForFunction(() => document.getElementById('live-status').textContent === 'live', null, { timeout: TIMEOUT });
  if (!(await page.isHidden('#votes-view'))) fail('the band contest is shown beside the weather view');
  await page.evaluate(() => { window.__sameLoad = true; });
  await page.screenshot({ path: `${screenshotDir}/workload-weather.png`, fullPage: true });
  console.log('ready weather');

  // 2. More reports counted: the view moves without a reload.
  const [weatherTotal, mixco] = await nextLine('weather');
  await waitForTotal(page, weatherTotal);
  await waitForBar(page, 'municipality', 'mixco', mixco);
  console.log('moved weather');

  // 3. The ballots view, reached from the navigation.
  const ballots = expected.ballots;
  await page.click('#workload-nav a[data-workload=ballots]');
  await waitForTotal(page, ballots.total);
  const places = await bars(page, 'polling_place');
  for (const [name, count] of Object.entries(ballots.polling_place)) {
    if (places[name]?.count !== count) fail(`polling place ${name}: page shows ${JSON.stringify(places[name])}, Redis holds ${count}`);
  }
  if (Object.keys(places).length !== 5) fail(`the top 5 polling places show ${Object.keys(places).length}`);
  const parties = await bars(page, 'party_by_department');
  for (const [label, share] of Object.entries(ballots.shares)) {
    if (parties[label]?.note !== share) fail(`the share of ${label} reads ${JSON.stringify(parties[label])}, expected ${share}`);
  }
  if ((await rows(page, 'w-recent')).length !== 5) fail('the last 5 ballots are not listed');
  console.log('ready ballots');

  const [ballotsTotal, guatemala] = await nextLine('ballots');
  await waitForTotal(page, ballotsTotal);
  await waitForBar(page, 'presidential_by_department', 'Guatemala', guatemala);
  if (!(await page.evaluate(() => window.__sameLoad === true))) fail('the page reloaded');

  // 4. The ballots' log search, over the spec's search fields.
  await page.fill('#w-search-form input[name=departamento]', ballots.search.departamento);
  await page.click('#w-search-form button[type=submit]');
  await page.waitForFunction(() => !document.getElementById('w-search-status').textContent.startsWith('searching'), null, { timeout: TIMEOUT });
  const found = await rows(page, 'w-log-results');
  if (found.length !== ballots.search.rows || !found.every((row) => row.includes(ballots.search.departamento))) {
    fail(`searching departamento ${ballots.search.departamento} shows ${JSON.stringify(found)}: ${await page.locator('#w-search-status').textContent()}`);
  }
  await page.fill('#w-search-form input[name=departamento]', '');
  // Past the input's maxlength, as a hand-made request would be.
  await page.evaluate(() => { document.querySelector('#w-search-form input[name=sede]').value = 'x'.repeat(300); });
  await page.click('#w-search-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('w-search-status').className.includes('error'), null, { timeout: TIMEOUT });
  const refusal = await page.locator('#w-search-status').textContent();
  if (!refusal.startsWith('sede:')) fail(`a too long value reads ${refusal}`);

  // 5. The markup polling place is text everywhere; nothing ran.
  if (!(expected.xss in places)) fail(`the polling place ${expected.xss} is not in the chart as text`);
  const injected = await page.evaluate(() => document.querySelectorAll('body script').length + document.querySelectorAll('script:not([src])').length + document.querySelectorAll('#workload-view img').length);
  if (injected !== 0) fail(`${injected} elements were injected into the page`);
  await page.screenshot({ path: `${screenshotDir}/workload-ballots.png`, fullPage: true });

  // 6. The band contest stays the default view.
  await page.click('#workload-nav a[data-workload=votes]');
  await page.waitForFunction(() => !document.getElementById('votes-view').hidden && document.getElementById('workload-view').hidden, null, { timeout: TIMEOUT });
  await page.waitForFunction(() => document.getElementById('total').textContent.trim() === '0', null, { timeout: TIMEOUT });
  if (dialogs.length > 0) fail(`a dialog fired: ${JSON.stringify(dialogs)}`);
  if (pageErrors.length > 0) fail(`the page threw: ${pageErrors.join('; ')}`);
  console.log(`screenshots ${screenshotDir}/workload-weather.png ${screenshotDir}/workload-ballots.png`);
  console.log('ok');
} finally {
  input.close();
  await browser.close();
}
