// End-to-end tests of the segment editor page in Debian's Chromium, driven
// by Playwright, against real segmentd servers that scripts/browser-test.sh
// starts: one without keys holding the CDNOW purchase history in tenant
// `cdnow`, one with keys holding a small tenant `shop`.
//
// Expected counts are computed here from the CDNOW file itself; what the
// page shows and saves is also checked against the service, read with this
// file's own small gRPC-Web client (not the page's).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
};
const OPEN_URL = env('SEGMENTD_URL');
const KEYED_URL = env('SEGMENTD_KEYED_URL');
const SHOP_KEY = env('SEGMENTD_SHOP_KEY');
const CDNOW = env('CDNOW_FILE');
const SCREENSHOT = env('SCREENSHOT');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const protobuf = createRequire(import.meta.url)('../../web/vendor/protobuf.min.js');
// The browser build of protobuf.js reads no files in Node: parse the text,
// with the well-known types it bundles for the proto's imports.
const root = new protobuf.Root();
for (const file of ['google/protobuf/timestamp.proto', 'google/protobuf/field_mask.proto']) {
  root.addJSON(protobuf.common.get(file).nested);
}
protobuf.parse(readFileSync(new URL('../../proto/segmentd/v1/segmentd.proto', import.meta.url), 'utf8'),
  root, { keepCase: true });
root.resolveAll();

/** A unary gRPC-Web call from Node: the status and the decoded answer. */
async function grpcWeb(base, method, request, key) {
  const requestType = root.lookupType(`segmentd.v1.${method}Request`);
  const responseType = root.lookupType(`segmentd.v1.${method}Response`);
  const payload = requestType.encode(requestType.fromObject(request)).finish();
  const frame = Buffer.alloc(5 + payload.length);
  frame.writeUInt32BE(payload.length, 1);
  Buffer.from(payload).copy(frame, 5);
  const headers = { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' };
  if (key) headers.authorization = `Bearer ${key}`;
  const response = await fetch(`${base}/segmentd.v1.SegmentService/${method}`, {
    method: 'POST', headers, body: frame,
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  let status = response.headers.get('grpc-status');
  let message = null;
  for (let at = 0; at + 5 <= bytes.length;) {
    const length = bytes.readUInt32BE(at + 1);
    const body = bytes.subarray(at + 5, at + 5 + length);
    if (bytes[at] & 0x80) {
      status = /grpc-status:\s*(\d+)/.exec(body.toString())?.[1] ?? status;
    } else {
      message = body;
    }
    at += 5 + length;
  }
  const answer = message
    ? responseType.toObject(responseType.decode(message), { longs: Number, defaults: true })
    : null;
  return { status: status === null ? NaN : Number(status), answer };
}

/** The CDNOW file's customers: total spend in cents and order dates. */
function cdnowCustomers() {
  const customers = new Map();
  for (const line of readFileSync(CDNOW, 'utf8').split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length !== 4 || !/^\d+$/.test(fields[1])) continue;
    const [id, date, , amount] = fields;
    const [whole, fraction = '0'] = amount.split('.');
    const cents = Number(whole) * 100 + Number(fraction.padEnd(2, '0').slice(0, 2));
    const customer = customers.get(id) ?? { cents: 0, dates: [] };
    customer.cents += cents;
    customer.dates.push(Number(date));
    customers.set(id, customer);
  }
  return customers;
}

const customers = cdnowCustomers();
const countWhere = (holds) => [...customers.values()].filter(holds).length;
const orderedH1 = (c) => c.dates.some((d) => d >= 19980101 && d <= 19980630);
const RULE_100 = 'ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 100';
const RULE_150 = 'ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 150';
const expected = {
  rule100: countWhere((c) => orderedH1(c) && c.cents >= 10000),
  rule150: countWhere((c) => orderedH1(c) && c.cents >= 15000),
  rule150Capped: countWhere((c) => orderedH1(c) && c.cents >= 15000 && c.cents < 10000000),
  orderedH1: countWhere(orderedH1),
  spent100: countWhere((c) => c.cents >= 10000),
};
const shown = (n) => n.toLocaleString('en-US');

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const failures = [];
async function test(name, body) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  try {
    await body(page);
    assert.deepEqual(errors, [], 'the page threw');
    console.log(`ok - ${name}`);
  } catch (error) {
    failures.push(name);
    console.log(`not ok - ${name}\n${error.stack ?? error}`);
    await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, `-failed-${failures.length}.png`) });
  } finally {
    await page.close();
  }
}

/** Opens the page on a tenant and waits until it is ready. */
async function open(page, base, tenant, key) {
  await page.goto(`${base}/?tenant=${encodeURIComponent(tenant)}`);
  await page.waitForSelector('body[data-tenant-loads="1"]');
  if (key) {
    await page.fill('#key', key);
    await page.locator('#key').blur();
    await page.waitForSelector('body[data-tenant-loads="2"]');
  }
}

const listSegments = async (showArchived) => (await grpcWeb(OPEN_URL, 'ListSegments', {
  tenant: 'cdnow', show_counts: true, show_archived: showArchived,
})).answer.segments;

await test('typing a rule shows the count CountAudience gives, and each clause alone', async (page) => {
  await open(page, OPEN_URL, 'cdnow');
  await page.locator('#rule').pressSequentially(RULE_100, { delay: 5 });
  await page.waitForFunction(
    (n) => document.querySelector('#count').textContent === n, shown(expected.rule100));
  const counted = await grpcWeb(OPEN_URL, 'CountAudience', { tenant: 'cdnow', rule_text: RULE_100 });
  assert.equal(counted.status, 0);
  assert.equal(counted.answer.count, expected.rule100);
  assert.equal(await page.textContent('#sendable'), '0', 'CDNOW has no SMS consent');
  const nodes = await page.locator('#nodes li').allTextContents();
  assert.equal(nodes.length, 3, `root and two clauses: ${nodes}`);
  assert.ok(nodes.some((n) => n.includes('ordered BETWEEN') && n.endsWith(shown(expected.orderedH1))), nodes.join(' | '));
  assert.ok(nodes.some((n) => n.startsWith('spent >= 100.00') && n.endsWith(shown(expected.spent100))), nodes.join(' | '));
  // The members come after the counts.
  await page.waitForFunction(() => document.querySelectorAll('#members li').length === 30);
  assert.match(await page.textContent('#members-note'), new RegExp(`of ${shown(expected.rule100)}$`));
});

await test('a rule that does not parse is shown with a caret at its line and column', async (page) => {
  await open(page, OPEN_URL, 'cdnow');
  const rule = 'ordered AND\n  spent >>= 5';
  await page.fill('#rule', rule);
  await page.waitForSelector('#error:not([hidden])');
  // The second line's `>` is a comparison; a number should follow, `>=` does.
  const secondLine = rule.split('\n')[1];
  const column = secondLine.indexOf('>=') + 1;
  assert.equal(await page.getAttribute('#error', 'data-line'), '2');
  assert.equal(await page.getAttribute('#error', 'data-column'), String(column));
  const caret = (await page.textContent('#error-caret')).split('\n');
  assert.equal(caret[0], secondLine);
  assert.equal(caret[1].indexOf('^'), column - 1);
  assert.match(await page.textContent('#error-message'), /expected a number/);
  assert.equal(await page.textContent('#count'), '–');
  // Fixing it clears the error.
  await page.fill('#rule', 'ordered AND spent >= 5');
  await page.waitForSelector('#error', { state: 'hidden' });
});

await test('only the last of quickly typed rules is shown', async (page) => {
  await open(page, OPEN_URL, 'cdnow');
  // Each pause is longer than the page's 200 ms debounce, so every rule
  // sends its call; all but the last are cancelled or dropped.
  for (const rule of ['ordered', RULE_100, 'spent >= 100', RULE_150]) {
    await page.fill('#rule', rule);
    await page.waitForTimeout(250);
  }
  const last = 'ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 150 AND spent < 100000';
  await page.fill('#rule', last);
  await page.waitForFunction(
    (n) => document.querySelector('#count').textContent === n, shown(expected.rule150Capped));
  // Long after every earlier answer could have come, the last rule's stays.
  await page.waitForTimeout(1000);
  assert.equal(await page.textContent('#count'), shown(expected.rule150Capped));
  assert.match(await page.textContent('#canonical'), /spent < 100000\.00$/);
});

await test('saving, editing and archiving show up in ListSegments', async (page) => {
  await open(page, OPEN_URL, 'cdnow');
  await page.fill('#segment-id', 'h1-big-spenders');
  await page.fill('#title', 'Big spenders, first half of 1998');
  await page.fill('#rule', RULE_100);
  await page.click('#save');
  await page.waitForFunction(() => /saved h1-big-spenders, version 1/.test(document.querySelector('#status').textContent));
  let [saved] = (await listSegments(false)).filter((s) => s.segment_id === 'h1-big-spenders');
  assert.equal(saved.version, 1);
  assert.equal(saved.rule_text, 'ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 100.00');
  assert.equal(saved.member_count, expected.rule100);
  await page.waitForSelector('#segments tr[data-segment-id="h1-big-spenders"]');
  // The tenant's line counts the new segment.
  await page.waitForFunction(() => / · 1 segment$/.test(document.querySelector('#tenant-info').textContent));

  // Open it afresh from the list, edit the rule, save.
  await page.click('#new');
  await page.click('#segments tr[data-segment-id="h1-big-spenders"]');
  await page.waitForFunction(() => document.querySelector('#rule').value.includes('spent >= 100.00'));
  await page.fill('#rule', RULE_150);
  await page.click('#save');
  await page.waitForFunction(() => /version 2/.test(document.querySelector('#status').textContent));
  [saved] = (await listSegments(false)).filter((s) => s.segment_id === 'h1-big-spenders');
  assert.equal(saved.version, 2);
  assert.equal(saved.rule_text, 'ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 150.00');
  assert.equal(saved.member_count, expected.rule150);
  const row = page.locator('#segments tr[data-segment-id="h1-big-spenders"] td').nth(1);
  await page.waitForFunction(
    ([selector, n]) => document.querySelector(selector)?.textContent === n,
    ['#segments tr[data-segment-id="h1-big-spenders"] td:nth-child(2)', shown(expected.rule150)]);
  assert.equal(await row.textContent(), shown(expected.rule150));
  await page.waitForSelector('.counts:not(.stale)');
  await page.waitForFunction(() => document.querySelectorAll('#members li').length > 0);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  await page.click('#archive');
  await page.waitForFunction(() => /archived h1-big-spenders/.test(document.querySelector('#status').textContent));
  // Archived, it cannot be edited until restored.
  assert.equal(await page.getAttribute('#rule', 'readonly'), '');
  assert.equal(await page.isDisabled('#save'), true);
  assert.deepEqual((await listSegments(false)).map((s) => s.segment_id).filter((id) => id === 'h1-big-spenders'), []);
  [saved] = (await listSegments(true)).filter((s) => s.segment_id === 'h1-big-spenders');
  assert.equal(saved.archived, true);
});

await test('with keys on, the page works with the tenant key and is refused without it', async (page) => {
  await open(page, KEYED_URL, 'shop');
  await page.fill('#rule', 'opted_in');
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error-message'), /^UNAUTHENTICATED/);

  await open(page, KEYED_URL, 'shop', SHOP_KEY);
  await page.fill('#rule', 'opted_in');
  const counted = await grpcWeb(KEYED_URL, 'CountAudience', { tenant: 'shop', rule_text: 'opted_in' }, SHOP_KEY);
  assert.equal(counted.status, 0);
  assert.equal(counted.answer.count, 2, 'the script wrote two opted-in customers of three');
  await page.waitForFunction(() => document.querySelector('#count').textContent === '2');
  // Another tenant's data with this key: refused as for any client.
  await open(page, KEYED_URL, 'elsewhere', SHOP_KEY);
  await page.fill('#rule', 'opted_in');
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error-message'), /^PERMISSION_DENIED/);
});

await browser.close();
if (failures.length) {
  console.log(`${failures.length} failed: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('all browser tests passed');
