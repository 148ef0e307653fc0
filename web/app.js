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
/** How long typing must pause before the counts are asked for. */
const DEBOUNCE_MS = 200;
/** Members shown under the counts. */
const MEMBERS_SHOWN = 30;

const $ = (id) => document.getElementById(id);
const state = {
  root: null,
  /** The segment being edited, as last read, or null for a new one. */
  open: null,
  /** Numbers the previews; an answer to an older one is dropped. */
  preview: 0,
  /** Aborts the preview in flight when the rule changes again. */
  inFlight: null,
  timer: null,
  /** Numbers the loads of a tenant; an older one's answer is dropped. */
  tenantLoads: 0,
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
  };
  const key = $('key').value.trim();
  if (key) headers.authorization = `Bearer ${key}`;

  const response = await fetch(`/${SERVICE}/${method}`, { method: 'POST', headers, body, signal });
  if (!response.ok) throw new RpcError('UNAVAILABLE', `the server answered HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  // A refusal may come as headers alone; otherwise the status is in the
  // trailer frame after the message.
  const trailers = {};
  for (const name of ['grpc-status', 'grpc-message']) {
    const value = response.headers.get(name);
    if (value !== null) trailers[name] = value;
  }
  let message = new Uint8Array();
  for (let at = 0; at + 5 <= bytes.length;) {
    const flags = bytes[at];
    const length = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
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

const tenant = () => $('tenant').value.trim();
const number = (n) => Number(n).toLocaleString('en-US');

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').style.color = isError ? 'var(--bad)' : '';
}

function describe(error) {
  return error instanceof RpcError ? `${error.code}: ${error.message}` : String(error.message ?? error);
}

// ----------------------------------------------------------------- preview

/** Asks for the counts of the rule as typed, once typing pauses. */
function rulesChanged() {
  clearTimeout(state.timer);
  state.timer = setTimeout(preview, DEBOUNCE_MS);
  document.querySelector('.counts').classList.add('stale');
}

async function preview() {
  const ruleText = $('rule').value;
  state.inFlight?.abort();
  const controller = new AbortController();
  state.inFlight = controller;
  const mine = ++state.preview;
  if (!tenant() || !ruleText.trim()) {
    showCounts(null);
    showError(null);
    return;
  }
  try {
    const counted = await call('CountAudience', {
      tenant: tenant(), rule_text: ruleText, node_counts: true,
    }, controller.signal);
    if (mine !== state.preview) return;
    showError(null);
    showCounts(counted);
    const page = await call('ResolveSegment', {
      tenant: tenant(), rule_text: ruleText, page_size: MEMBERS_SHOWN,
    }, controller.signal);
    if (mine !== state.preview) return;
    showMembers(page);
  } catch (error) {
    if (error.name === 'AbortError' || mine !== state.preview) return;
    showCounts(null);
    showError(error, ruleText);
  }
}

function showCounts(counted) {
  document.querySelector('.counts').classList.remove('stale');
  $('count').textContent = counted ? number(counted.count) : '–';
  $('sendable').textContent = counted ? number(counted.sendable_count) : '–';
  $('canonical').textContent = counted ? counted.rule_text : '';
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
    $('error-caret').textContent = `${text}\n${' '.repeat(Math.max(column - 1, 0))}^`;
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
  const body = $('segments');
  if (!tenant()) {
    body.replaceChildren();
    return;
  }
  try {
    const segments = [];
    let pageToken = '';
    do {
      const page = await call('ListSegments', {
        tenant: tenant(), show_counts: true, show_archived: $('show-archived').checked,
        page_size: 1000, page_token: pageToken,
      });
      segments.push(...page.segments);
      pageToken = page.next_page_token;
    } while (pageToken);
    body.replaceChildren(...segments.map(segmentRow));
    $('segments-note').textContent = segments.length ? '' : 'No saved segments yet.';
  } catch (error) {
    body.replaceChildren();
    $('segments-note').textContent = describe(error);
  }
}

function segmentRow(segment) {
  const row = document.createElement('tr');
  row.dataset.segmentId = segment.segment_id;
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
  return row;
}

async function openSegment(segmentId) {
  try {
    const { segment } = await call('GetSegment', { tenant: tenant(), segment_id: segmentId });
    state.open = segment;
    $('segment-id').value = segment.segment_id;
    $('segment-id').disabled = true;
    $('title').value = segment.title;
    $('rule').value = segment.rule_text;
    $('save').textContent = 'Save changes';
    $('archive').hidden = false;
    $('archive').textContent = segment.archived ? 'Unarchive' : 'Archive';
    setStatus(`opened ${segment.segment_id}, version ${segment.version}`);
    preview();
    listSegments();
  } catch (error) {
    setStatus(describe(error), true);
  }
}

function newSegment() {
  state.open = null;
  $('segment-id').value = '';
  $('segment-id').disabled = false;
  $('title').value = '';
  $('rule').value = '';
  $('save').textContent = 'Save as segment';
  $('archive').hidden = true;
  setStatus('');
  preview();
  listSegments();
}

async function save() {
  const segment = { title: $('title').value, rule_text: $('rule').value };
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
    await openSegment(saved.segment_id);
    setStatus(`saved ${saved.segment_id}, version ${saved.version}`);
  } catch (error) {
    setStatus(describe(error), true);
  }
}

async function toggleArchived() {
  if (!state.open) return;
  const method = state.open.archived ? 'UnarchiveSegment' : 'ArchiveSegment';
  try {
    const { segment } = await call(method, { tenant: tenant(), segment_id: state.open.segment_id });
    if (segment.archived) $('show-archived').checked = true;
    await openSegment(segment.segment_id);
    setStatus(`${segment.archived ? 'archived' : 'restored'} ${segment.segment_id}`);
  } catch (error) {
    setStatus(describe(error), true);
  }
}

// ------------------------------------------------------------------ tenant

async function tenantChanged() {
  const mine = ++state.tenantLoads;
  localStorage.setItem('segmentd.tenant', tenant());
  let info = '';
  if (tenant()) {
    try {
      const facts = await call('GetTenant', { tenant: tenant() });
      info = `${number(facts.customer_count)} customers · ${facts.time_zone} · ` +
        `${number(facts.segment_count)} segments`;
    } catch (error) {
      info = describe(error);
    }
  }
  // A later change of tenant or key has taken over.
  if (mine !== state.tenantLoads) return;
  $('tenant-info').textContent = info;
  newSegment();
  document.body.dataset.tenantLoads = String(mine);
}

async function start() {
  state.root = await new protobuf.Root().load('/segmentd.proto', { keepCase: true });
  const params = new URLSearchParams(location.search);
  $('tenant').value = params.get('tenant') ?? localStorage.getItem('segmentd.tenant') ?? '';
  $('rule').addEventListener('input', rulesChanged);
  $('tenant').addEventListener('change', tenantChanged);
  $('key').addEventListener('change', tenantChanged);
  $('connection').addEventListener('submit', (event) => event.preventDefault());
  $('save').addEventListener('click', save);
  $('new').addEventListener('click', newSegment);
  $('archive').addEventListener('click', toggleArchived);
  $('refresh').addEventListener('click', listSegments);
  $('show-archived').addEventListener('change', listSegments);
  document.body.dataset.ready = 'true';
  await tenantChanged();
}

start().catch((error) => setStatus(`cannot start: ${describe(error)}`, true));
