// Drives the results page in a real headless Chromium (Debian's /usr/bin/chromium) for the e2e
// test crates/e2e/tests/results_page.rs, which starts the stack and talks to this script over
// stdin/stdout, one line per step:
//   node results-page.mjs <results url> <rest producer url> <screenshot path>
//   env EXPECTED: JSON {total, wasm, grpc, bands: {name: count}} that Redis holds now
//   env XSS_BAND: a band name that is markup; a vote for it is counted already
// Steps: check the page shows EXPECTED -> print "ready" -> the test casts gRPC votes and writes
// "grpc <n>" -> cast 5 REST votes here -> wait for the page to move without a reload -> search
// by a vote id just cast -> check the markup band is text and no dialog fired -> screenshot ->
// print "ok".
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [resultsUrl, restUrl, screenshotPath] = process.argv.slice(2);
const expected = JSON.parse(process.env.EXPECTED);
const xssBand = process.env.XSS_BAND;
const REST_VOTES = 5;
const TIMEOUT = 20_000;

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function nextLine() {
  const { value, done } = await lines.next();
  if (done) throw new Error('the test closed stdin');
  return value.trim();
}

function fail(message) {
  throw new Error(message);
}

const digits = (text) => Number(String(text).replace(/[^0-9]/g, ''));

async function numberOf(page, id) {
  return digits(await page.locator(`#${id}`).textContent());
}

async function waitForNumber(page, id, want) {
  await page.waitForFunction(
    ([id, want]) => Number(document.getElementById(id).textContent.replace(/[^0-9]/g, '')) === want,
    [id, want],
    { timeout: TIMEOUT },
  ).catch(async () => fail(`#${id} shows ${await page.locator(`#${id}`).textContent()}, expected ${want}`));
}

/** The band chart as {name: count}, read from the SVG's text nodes. */
async function chartBands(page) {
  return page.evaluate(() => {
    const bands = {};
    const labels = [...document.querySelectorAll('#band-chart text.band')];
    const counts = [...document.querySelectorAll('#band-chart text.count')];
    labels.forEach((label, i) => {
      bands[label.querySelector('title').textContent] = Number(counts[i].textContent.replace(/[^0-9]/g, ''));
    });
    return bands;
  });
}

async function castRest(vote) {
  const response = await fetch(`${restUrl}/votes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(vote),
  });
  if (response.status !== 202) fail(`POST /votes answered ${response.status}: ${await response.text()}`);
  return (await response.json()).vote_id;
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const dialogs = [];
  page.on('dialog', (dialog) => { dialogs.push(dialog.message()); dialog.dismiss().catch(() => {}); });
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));

  await page.goto(resultsUrl);
  // 1. The page shows what Redis holds.
  await waitForNumber(page, 'total', expected.total);
  await waitForNumber(page, 'path-wasm', expected.wasm);
  await waitForNumber(page, 'path-grpc', expected.grpc);
  const shown = await chartBands(page);
  for (const [band, count] of Object.entries(expected.bands)) {
    if (shown[band] !== count) fail(`band ${JSON.stringify(band)}: page shows ${shown[band]}, Redis holds ${count}`);
  }
  await page.waitForFunction(() => document.getElementById('live-status').textContent === 'live', null, { timeout: TIMEOUT });
  // Marks this page load: a reload would lose it.
  await page.evaluate(() => { window.__sameLoad = true; });
  console.log('ready');

  // 2. Votes over both paths move the numbers without a reload.
  const grpcLine = await nextLine();
  const grpcCast = Number(grpcLine.split(' ')[1]);
  if (!grpcLine.startsWith('grpc ') || !(grpcCast > 0)) fail(`unexpected line from the test: ${grpcLine}`);
  const restIds = [];
  for (let i = 0; i < REST_VOTES; i += 1) {
    restIds.push(await castRest({ name: 'Bohemia Suburbana', album: 'Eructo del alma', year: '1996', rank: String(i + 1) }));
  }
  await waitForNumber(page, 'total', expected.total + grpcCast + REST_VOTES);
  await waitForNumber(page, 'path-grpc', expected.grpc + grpcCast);
  await waitForNumber(page, 'path-wasm', expected.wasm + REST_VOTES);
  if (!(await page.evaluate(() => window.__sameLoad === true))) fail('the page reloaded');

  // 3. A search by a vote id just cast finds it (its log may land a moment after its count).
  const wanted = restIds[REST_VOTES - 1];
  await page.fill('#search-form input[name=vote_id]', wanted);
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    await page.click('#search-form button[type=submit]');
    await page.waitForFunction(() => !document.getElementById('search-status').textContent.startsWith('searching'), null, { timeout: TIMEOUT });
    const ids = await page.locator('#log-results tbody td.id').allTextContents();
    if (ids.length === 1 && ids[0] === wanted) break;
    if (Date.now() > deadline) fail(`searching vote id ${wanted} shows ${JSON.stringify(ids)}`);
    await page.waitForTimeout(300);
  }
  const found = await page.locator('#log-results tbody tr').first().locator('td').allTextContents();
  if (!found.includes('Bohemia Suburbana') || !found.includes('wasm')) fail(`the found row reads ${JSON.stringify(found)}`);
  await page.fill('#search-form input[name=vote_id]', '');

  // 4. The markup band is text: in the chart, in the latest votes, and in a search by band.
  const bands = await chartBands(page);
  if (!(xssBand in bands)) fail(`the band ${xssBand} is not in the chart as text: ${JSON.stringify(Object.keys(bands))}`);
  await page.fill('#search-form input[name=band]', xssBand);
  await page.click('#search-form button[type=submit]');
  await page.waitForFunction((band) => [...document.querySelectorAll('#log-results tbody td')].some((td) => td.textContent === band), xssBand, { timeout: TIMEOUT });
  const injected = await page.evaluate(() => document.querySelectorAll('body script').length + document.querySelectorAll('script:not([src])').length);
  if (injected !== 0) fail(`${injected} script elements were injected into the page`);
  if (dialogs.length > 0) fail(`a dialog fired: ${JSON.stringify(dialogs)}`);
  if (pageErrors.length > 0) fail(`the page threw: ${pageErrors.join('; ')}`);

  await page.screenshot({ path: screenshotPath, fullPage: true });
  console.log(`screenshot ${screenshotPath}`);
  console.log('ok');
} finally {
  input.close();
  await browser.close();
}
