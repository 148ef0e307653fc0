// segmentd's segment editor. Every call goes to segmentd.v1.SegmentService
// over gRPC-Web, encoded by protobuf.js from the service's own .proto, so
// the page can do nothing another client cannot.
'use strict';

const SERVICE = 'segmentd.v1.SegmentService';
/** gRPC status codes by number. */
const CODES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION',
  'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS',
  'UNAUTHENTICATED',
];
/** gRPC codes for HTTP statuses a proxy or the server may answer with. */
const HTTP_CODES = {
  400: 'INTERNAL', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'UNIMPLEMENTED',
  429: 'UNAVAILABLE', 502: 'UNAVAILABLE', 503: 'UNAVAILABLE', 504: 'UNAVAILABLE',
};
/** How long typing must pause before the counts are asked for. */
const DEBOUNCE_MS = 200;
/** Members shown under the counts. */
const MEMBERS_SHOWN = 30;
/** The deadline of every call. */
const DEADLINE = '30S';

const $ = (id) => document.getElementById(id);
const state = {
  root: null,
  /** The tenant and key in use: set when their fields change, not as typed. */
  tenant: '',
  key: '',
  /** The segment being edited, as last read, or null for a new one. */
  open: null,
  /** Each numbers its calls; an answer to an older one is dropped. */
  preview: 0,
  listing: 0,
  opening: 0,
  tenantLoads: 0,
  /** Aborts the preview in flight when the rule changes again. */
  inFlight: null,
  timer: null,
};

class RpcError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** One unary call over gRPC-Web; resolves to the response as a plain object. */
async function call(method, request, signal) {
  const requestType = state.root.lookupType(`segmentd.v1.${method}Request`);
  const responseType = state.root.lookupType(`segmentd.v1.${method}Response`);
  const payload = requestType.encode(requestType.fromObject(request)).finish();
  const body = new Uint8Array(5 + payload.length);
  new DataView(body.buffer).setUint32(1, payload.length);
  body.set(payload, 5);
  const headers = {
    'content-type': 'application/grpc-web+proto',
    accept: 'application/grpc-web+proto',
    'x-grpc-web': '1',
    'grpc-timeout': DEADLINE,
  };
  if (state.key) headers.authorization = `Bearer ${state.key}`;

  const response = await fetch(`/${SERVICE}/${method}`, { method: 'POST', headers, body, signal });
  if (!response.ok) {
    throw new RpcError(HTTP_CODES[response.status] ?? 'UNKNOWN', `the server answered HTTP ${response.status}`);
  }
  if (!(response.headers.get('content-type') ?? '').startsWith('application/grpc-web')) {
    throw new RpcError('UNKNOWN', 'the answer is not gRPC-Web (a proxy in the way?)');
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  // A refusal may come as headers alone; otherwise the status is in the
  // trailer frame after the message.
  const trailers = {};
  for (const name of ['grpc-status', 'grpc-message']) {
    const value = response.headers.get(name);
    if (value !== null) trailers[name] = value;
  }
  let message = new Uint8Array();
  for (let at = 0; at < bytes.length;) {
    if (at + 5 > bytes.length) throw new RpcError('UNKNOWN', 'the answer was cut short');
    const flags = bytes[at];
    const length = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
    if (at + 5 + length > bytes.length) throw new RpcError('UNKNOWN', 'the answer was cut short');
    if (flags & 0x01) throw new RpcError('UNIMPLEMENTED', 'the answer is compressed');
    const frame = bytes.subarray(at + 5, at + 5 + length);
    at += 5 + length;
    if (flags & 0x80) {
      for (const line of new TextDecoder().decode(frame).split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
    } else {
      message = frame;
    }
  }
  const code = Number(trailers['grpc-status'] ?? 2);
  if (code !== 0) throw new RpcError(CODES[code] ?? `code ${code}`, percentDecoded(trailers['grpc-message'] ?? ''));
  return responseType.toObject(responseType.decode(message), {
    longs: Number, enums: String, defaults: true,
  });
}

function percentDecoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

const tenant = () => state.tenant;
const number = (n) => Number(n).toLocaleString('en-US');

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').style.color = isError ? 'var(--bad)' : '';
}

function describe(error) {
  return error instanceof RpcError ? `${error.code}: ${error.message}` : String(error.message ?? error);
}

// ----------------------------------------------------------------- preview

/** Asks for the counts of the rule as typed, once typing pauses; what was
 * asked before is cancelled at once, and its answer dropped. */
function rulesChanged() {
  clearTimeout(state.timer);
  state.inFlight?.abort();
  state.preview += 1;
  document.querySelector('.counts').classList.add('stale');
  state.timer = setTimeout(preview, DEBOUNCE_MS);
}

async function preview() {
  const ruleText = $('rule').value;
  state.inFlight?.abort();
  const controller = new AbortController();
  state.inFlight = controller;
  const mine = ++state.preview;
  const asked = tenant();
  if (!asked || !ruleText.trim()) {
    showCounts(null);
    showError(null);
    return;
  }
  const current = () => mine === state.preview && asked === tenant();
  try {
    const counted = await call('CountAudience', {
      tenant: asked, rule_text: ruleText, node_counts: true,
    }, controller.signal);
    if (!current()) return;
    showError(null);
    showCounts(counted);
    const page = await call('ResolveSegment', {
      tenant: asked, rule_text: ruleText, page_size: MEMBERS_SHOWN,
    }, controller.signal);
    if (!current()) return;
    showMembers(page);
  } catch (error) {
    if (error.name === 'AbortError' || !current()) return;
    showCounts(null);
    showError(error, ruleText);
  }
}

function showCounts(counted) {
  document.querySelector('.counts').classList.remove('stale');
  $('count').textContent = counted ? number(counted.count) : '–';
  $('sendable').textContent = counted ? number(counted.sendable_count) : '–';
  $('canonical').textContent = counted ? `Canonical: ${counted.rule_text}` : '';
  const nodes = $('nodes');
  nodes.replaceChildren();
  for (const node of counted?.node_counts ?? []) {
    const item = document.createElement('li');
    item.dataset.path = node.path;
    const text = document.createElement('span');
    text.className = 'text';
    text.style.paddingLeft = `${node.depth * 16}px`;
    text.textContent = node.rule_text;
    const n = document.createElement('span');
    n.className = 'n';
    n.textContent = number(node.count);
    item.append(text, n);
    nodes.append(item);
  }
  if (!counted) showMembers(null);
}

function showMembers(page) {
  const list = $('members');
  list.replaceChildren();
  for (const id of page?.customer_ids ?? []) {
    const item = document.createElement('li');
    item.textContent = id;
    list.append(item);
  }
  $('members-note').textContent = page
    ? `first ${number(page.customer_ids.length)} of ${number(page.total_count)}`
    : '';
}

/** Shows a refusal; a rule that does not parse gets a caret at its column. */
function showError(error, ruleText = '') {
  const box = $('error');
  if (!error) {
    box.hidden = true;
    delete box.dataset.line;
    delete box.dataset.column;
    return;
  }
  box.hidden = false;
  const at = /line (\d+), column (\d+): (.*)$/s.exec(error.message ?? '');
  if (error.code === 'INVALID_ARGUMENT' && at) {
    const [line, column] = [Number(at[1]), Number(at[2])];
    box.dataset.line = line;
    box.dataset.column = column;
    const text = ruleText.split('\n')[line - 1] ?? '';
    // Tabs stay tabs under the line, so the caret lines up.
    const pad = [...text.slice(0, Math.max(column - 1, 0))].map((c) => (c === '\t' ? '\t' : ' ')).join('');
    $('error-caret').textContent = `${text}\n${pad}^`;
    $('error-message').textContent = `line ${line}, column ${column}: ${at[3]}`;
  } else {
    delete box.dataset.line;
    delete box.dataset.column;
    $('error-caret').textContent = '';
    $('error-message').textContent = describe(error);
  }
}

// ---------------------------------------------------------------- segments

async function listSegments() {
  const mine = ++state.listing;
  const asked = tenant();
  const showArchived = $('show-archived').checked;
  const body = $('segments');
  if (!asked) {
    body.replaceChildren();
    return;
  }
  try {
    const segments = [];
    let pageToken = '';
    do {
      const page = await call('ListSegments', {
        tenant: asked, show_counts: true, show_archived: showArchived,
        page_size: 1000, page_token: pageToken,
      });
      if (mine !== state.listing) return;
      segments.push(...page.segments);
      pageToken = page.next_page_token;
    } while (pageToken);
    body.replaceChildren(...segments.map(segmentRow));
    $('segments-note').textContent = segments.length ? '' : 'No saved segments yet.';
  } catch (error) {
    if (mine !== state.listing) return;
    body.replaceChildren();
    $('segments-note').textContent = describe(error);
  }
}

function segmentRow(segment) {
  const row = document.createElement('tr');
  row.dataset.segmentId = segment.segment_id;
  row.tabIndex = 0;
  row.classList.toggle('archived', segment.archived);
  row.classList.toggle('open', state.open?.segment_id === segment.segment_id);
  const name = document.createElement('td');
  const id = document.createElement('span');
  id.className = 'id';
  id.textContent = segment.segment_id + (segment.archived ? ' (archived)' : '');
  const title = document.createElement('span');
  title.className = 'title';
  title.textContent = segment.title;
  name.append(id, title);
  const cells = [segment.member_count, segment.sendable_count, segment.version].map((value) => {
    const cell = document.createElement('td');
    cell.textContent = number(value ?? 0);
    return cell;
  });
  row.append(name, ...cells);
  row.addEventListener('click', () => openSegment(segment.segment_id));
  row.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') openSegment(segment.segment_id);
  });
  return row;
}

function markOpenRow() {
  for (const row of $('segments').querySelectorAll('tr')) {
    row.classList.toggle('open', state.open?.segment_id === row.dataset.segmentId);
  }
}

async function openSegment(segmentId) {
  const mine = ++state.opening;
  try {
    const { segment } = await call('GetSegment', { tenant: tenant(), segment_id: segmentId });
    if (mine !== state.opening) return;
    showSegment(segment);
    const lists = segment.included_customer_ids.length + segment.excluded_customer_ids.length;
    setStatus(`opened ${segment.segment_id}, version ${segment.version}` +
      (segment.archived ? ' (archived: unarchive to edit)' : '') +
      (lists ? `; its include and exclude lists (${number(lists)} ids) apply too, not counted here` : ''));
    rulesChanged();
    markOpenRow();
  } catch (error) {
    if (mine === state.opening) setStatus(describe(error), true);
  }
}

/** Fills the editor with a segment; an archived one cannot be edited. */
function showSegment(segment) {
  state.open = segment;
  $('segment-id').value = segment.segment_id;
  $('segment-id').disabled = true;
  $('title').value = segment.title;
  $('rule').value = segment.rule_text;
  $('title').readOnly = segment.archived;
  $('rule').readOnly = segment.archived;
  $('save').textContent = 'Save changes';
  $('save').disabled = segment.archived;
  $('archive').hidden = false;
  $('archive').textContent = segment.archived ? 'Unarchive' : 'Archive';
}

function newSegment() {
  state.open = null;
  state.opening += 1;
  $('segment-id').value = '';
  $('segment-id').disabled = false;
  $('title').value = '';
  $('rule').value = '';
  $('title').readOnly = false;
  $('rule').readOnly = false;
  $('save').textContent = 'Save as segment';
  $('save').disabled = false;
  $('archive').hidden = true;
  setStatus('');
  rulesChanged();
  markOpenRow();
}

/** Runs an action with the action buttons off, so it cannot run twice. */
async function busy(action) {
  const buttons = [$('save'), $('archive'), $('new')];
  const before = buttons.map((button) => button.disabled);
  buttons.forEach((button) => { button.disabled = true; });
  try {
    await action();
  } finally {
    buttons.forEach((button, n) => { button.disabled = before[n]; });
    if (state.open?.archived) $('save').disabled = true;
  }
}

async function save() {
  const segment = { title: $('title').value, rule_text: $('rule').value };
  setStatus('saving…');
  try {
    let saved;
    if (state.open) {
      ({ segment: saved } = await call('UpdateSegment', {
        tenant: tenant(),
        segment_id: state.open.segment_id,
        version: state.open.version,
        segment,
        update_mask: { paths: ['title', 'rule_text'] },
      }));
    } else {
      ({ segment: saved } = await call('CreateSegment', {
        tenant: tenant(), segment_id: $('segment-id').value.trim(), segment,
      }));
    }
    showSegment(saved);
    setStatus(`saved ${saved.segment_id}, version ${saved.version}`);
    rulesChanged();
    await Promise.all([listSegments(), showTenantInfo()]);
  } catch (error) {
    setStatus(describe(error), true);
  }
}

async function toggleArchived() {
  if (!state.open) return;
  const method = state.open.archived ? 'UnarchiveSegment' : 'ArchiveSegment';
  try {
    const { segment } = await call(method, { tenant: tenant(), segment_id: state.open.segment_id });
    showSegment(segment);
    setStatus(segment.archived
      ? `archived ${segment.segment_id} (unarchive to edit; "archived too" lists it)`
      : `restored ${segment.segment_id}`);
    await Promise.all([listSegments(), showTenantInfo()]);
  } catch (error) {
    setStatus(describe(error), true);
  }
}

// ------------------------------------------------------------------ tenant

const plural = (n, one, many) => `${number(n)} ${Number(n) === 1 ? one : many}`;

async function tenantInfo() {
  if (!tenant()) return '';
  try {
    const facts = await call('GetTenant', { tenant: tenant() });
    return `${plural(facts.customer_count, 'customer', 'customers')} · ${facts.time_zone} · ` +
      `${plural(facts.segment_count, 'segment', 'segments')}`;
  } catch (error) {
    return describe(error);
  }
}

async function showTenantInfo() {
  const asked = tenant();
  const info = await tenantInfo();
  if (asked === tenant()) $('tenant-info').textContent = info;
}

/** A new tenant or key: everything is read again; a new tenant also
 * clears the editor. */
async function connectionChanged(tenantChanged) {
  const mine = ++state.tenantLoads;
  state.tenant = $('tenant').value.trim();
  state.key = $('key').value.trim();
  localStorage.setItem('segmentd.tenant', state.tenant);
  const url = new URL(location.href);
  url.searchParams.set('tenant', state.tenant);
  history.replaceState(null, '', url);
  if (tenantChanged) newSegment();
  else rulesChanged();
  const [info] = await Promise.all([tenantInfo(), listSegments()]);
  // A later change has taken over.
  if (mine !== state.tenantLoads) return;
  $('tenant-info').textContent = info;
  document.body.dataset.tenantLoads = String(mine);
}

async function start() {
  state.root = await new protobuf.Root().load('/segmentd.proto', { keepCase: true });
  const params = new URLSearchParams(location.search);
  $('tenant').value = params.get('tenant') ?? localStorage.getItem('segmentd.tenant') ?? '';
  $('rule').addEventListener('input', rulesChanged);
  $('tenant').addEventListener('change', () => connectionChanged(true));
  $('key').addEventListener('change', () => connectionChanged(false));
  $('connection').addEventListener('submit', (event) => event.preventDefault());
  $('save').addEventListener('click', () => busy(save));
  $('new').addEventListener('click', newSegment);
  $('archive').addEventListener('click', () => busy(toggleArchived));
  $('refresh').addEventListener('click', listSegments);
  $('show-archived').addEventListener('change', listSegments);
  document.body.dataset.ready = 'true';
  await connectionChanged(true);
}

start().catch((error) => setStatus(`cannot start: ${describe(error)}`, true));
