// The page: talks to the classifier in worker.js and shows what it says. The classifier's state
// is on <body data-state>: loading, ready or failed (`data-ready` is set once it is ready).
const $ = (id) => document.getElementById(id);
const status = $('status');
const download = $('download');
const result = $('result');
const errorBox = $('error');
const BUTTONS = ['classify', 'explain', 'classify-batch'];
// Where the visitor's choice of model is kept between visits.
const CHOICE_KEY = 'feelings-model-choice';
// A worker that dies this many times in a row without becoming ready is not restarted again.
const MAX_RESTARTS = 3;

let worker;
let nextId = 1;
let restarts = 0;
let started = performance.now();
// The bundle folder the classifier loads, relative to the page.
let modelPath = 'model/';
const pending = new Map();
const busy = new Set();

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.textContent = '';
  errorBox.hidden = true;
}

// The classifier's state, said in #status and shown by the buttons.
function setState(state, message) {
  document.body.dataset.state = state;
  if (state === 'ready') document.body.dataset.ready = 'true';
  else delete document.body.dataset.ready;
  status.textContent = message;
  $('retry').hidden = state !== 'failed';
  updateButtons();
}

function updateButtons() {
  const ready = document.body.dataset.state === 'ready';
  for (const id of BUTTONS) $(id).disabled = !ready || busy.has(id);
}

// Sends `message` to the worker and resolves with its answer; refused while a model loads (a
// request of the model chosen before would reach the next one).
function ask(message) {
  return new Promise((resolve, reject) => {
    if (document.body.dataset.state !== 'ready') {
      reject(new Error('The model is loading: try again once it is ready.'));
      return;
    }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...message, id });
  });
}

// Runs `work` for button `id` with `target` marked busy; its error, if any, is shown, and a
// success clears an earlier error.
async function run(id, target, work) {
  busy.add(id);
  updateButtons();
  target.setAttribute('aria-busy', 'true');
  try {
    await work();
    clearError();
  } catch (err) {
    showError(err.message);
  } finally {
    target.removeAttribute('aria-busy');
    busy.delete(id);
    updateButtons();
  }
}

function describe(p) {
  const percent = (100 * p.score).toFixed(1);
  return `${p.label} (probability of positive ${percent} %${p.truncated ? ', review cut to fit' : ''})`;
}

// Shows `text` with the parts the model did not read greyed (`span.cut`), or hides the view
// when it read everything.
function showReadParts(text, parts) {
  const view = $('read-view');
  view.hidden = parts === null;
  if (parts === null) return;
  const spans = [];
  let at = 0;
  const piece = (from, to, cls) => {
    if (to <= from) return;
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = text.slice(from, to);
    spans.push(span);
  };
  for (const { start, end } of parts) {
    piece(at, start, 'cut');
    piece(start, end, 'read');
    at = end;
  }
  piece(at, text.length, 'cut');
  $('read').replaceChildren(...spans);
}

async function classifyOne() {
  const text = $('review').value;
  await run('classify', result, async () => {
    try {
      const [p] = await ask({ type: 'classify', texts: [text] });
      const parts = p.truncated ? await ask({ type: 'read', text }) : null;
      showReadParts(text, parts);
      result.textContent = describe(p);
      result.dataset.label = p.label;
      result.dataset.score = String(p.score);
    } catch (err) {
      // An earlier result is not this review's.
      result.textContent = '';
      delete result.dataset.label;
      delete result.dataset.score;
      throw err;
    }
  });
}

// A function from UTF-8 byte offsets in `text` (the core's) to its UTF-16 indices (JavaScript's).
function utf16Index(text) {
  const at = new Map([[0, 0]]);
  let bytes = 0;
  let index = 0;
  for (const c of text) {
    const point = c.codePointAt(0);
    bytes += point < 0x80 ? 1 : point < 0x800 ? 2 : point < 0x10000 ? 3 : 4;
    index += c.length;
    at.set(bytes, index);
  }
  return (byte) => at.get(byte);
}

// Shows `text` with each explained unit highlighted: green pushed toward positive, red toward
// negative, stronger for a larger weight; the weight is on each span (`data-weight`).
function showExplanation(text, explanation) {
  const box = $('explanation');
  const largest = Math.max(1e-6, ...explanation.units.map((u) => Math.abs(u.weight)));
  const index = utf16Index(text);
  const parts = [];
  let at = 0;
  for (const unit of explanation.units) {
    const [start, end] = [index(unit.start), index(unit.end)];
    parts.push(document.createTextNode(text.slice(at, start)));
    const span = document.createElement('span');
    span.textContent = text.slice(start, end);
    span.dataset.weight = String(unit.weight);
    const strength = (0.1 + 0.5 * Math.abs(unit.weight) / largest).toFixed(2);
    const rgb = unit.weight >= 0 ? '43, 138, 62' : '201, 42, 42';
    span.style.background = `rgba(${rgb}, ${strength})`;
    span.title = `${unit.weight >= 0 ? '+' : ''}${unit.weight.toFixed(4)}`;
    parts.push(span);
    at = end;
  }
  parts.push(document.createTextNode(text.slice(at)));
  box.replaceChildren(...parts);
  box.dataset.score = String(explanation.score);
  box.dataset.granularity = explanation.granularity;
  const unit = {
    word: 'word', sentence: 'sentence', passage: 'run of sentences', phrase: 'run of words',
  }[explanation.granularity];
  $('explanation-caption').firstChild.textContent = `Each ${unit} left out in turn: `;
  $('explanation-view').hidden = false;
}

async function explainOne() {
  const text = $('review').value;
  await run('explain', $('explanation'), async () => {
    showExplanation(text, await ask({ type: 'explain', text }));
  });
}

function batchRow(text, p) {
  const row = document.createElement('tr');
  row.dataset.label = p.label;
  row.dataset.score = String(p.score);
  for (const [value, cls] of [[text, ''], [p.label, p.label], [p.score.toFixed(4), '']]) {
    const cell = document.createElement('td');
    cell.textContent = value;
    if (cls) cell.className = cls;
    row.append(cell);
  }
  return row;
}

async function classifyMany() {
  const lines = $('batch').value.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  if (lines.length === 0) return;
  const table = $('batch-results');
  await run('classify-batch', table, async () => {
    const predictions = await ask({ type: 'classify', texts: lines });
    table.querySelector('tbody').replaceChildren(...predictions.map((p, i) => batchRow(lines[i], p)));
    table.hidden = false;
  });
}

// The worker died (an uncaught error, a trap): what it was asked fails with `message`, and a
// new one is started unless it keeps dying before it is ready.
function workerDied(message) {
  worker.terminate();
  for (const { reject } of pending.values()) reject(new Error(`${message} Restarting it.`));
  pending.clear();
  restarts += 1;
  if (restarts > MAX_RESTARTS) {
    setState('failed', 'Not available');
    showError(`${message} It failed ${restarts} times in a row: try again, or reload the page.`);
    return;
  }
  showError(`${message} Restarting it.`);
  startWorker('Restarting the classifier…');
}

function onReady(manifest, offline) {
  restarts = 0;
  try {
    localStorage.setItem(CHOICE_KEY, modelPath);
  } catch {
    // Not kept for the next visit.
  }
  download.value = download.max;
  const where = offline ? ' (offline: from this browser\'s cache)' : '';
  setState('ready', `Model ready in ${((performance.now() - started) / 1000).toFixed(1)} s${where}`);
  const accuracy = manifest.test_metrics ? `, test accuracy ${(100 * manifest.test_metrics.accuracy).toFixed(1)} %` : '';
  const kept = { tail: 'the beginning', 'head+tail': 'the beginning and the end' }[manifest.truncation] ?? manifest.truncation;
  $('model-info').textContent = `Model ${manifest.name}: reads ${manifest.max_seq_len} tokens (${kept} of a longer review), threshold ${manifest.threshold}${accuracy}.`;
}

function onMessage({ data }) {
  if (data.type === 'progress') {
    download.max = data.total || data.loaded;
    download.value = data.loaded;
    status.textContent = `Downloading the model: ${(data.loaded / 1e6).toFixed(1)} MB`;
  } else if (data.type === 'ready') {
    onReady(data.manifest, data.offline);
  } else if (data.type === 'result') {
    pending.get(data.id)?.resolve(data.value);
    pending.delete(data.id);
  } else if (data.type === 'error' && data.id === undefined) {
    setState('failed', 'Not available');
    showError(`The model could not be loaded: ${data.message}`);
  } else if (data.type === 'error') {
    pending.get(data.id)?.reject(new Error(data.message));
    pending.delete(data.id);
    if (data.fatal) workerDied('The classifier stopped after an internal error.');
  }
}

function startWorker(message) {
  started = performance.now();
  setState('loading', message);
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onerror = (event) => {
    event.preventDefault();
    workerDied(`The classifier stopped: ${event.message ?? 'unknown error'}.`);
  };
  worker.onmessageerror = () => workerDied('The classifier sent a message the page cannot read.');
  worker.onmessage = onMessage;
  worker.postMessage({ type: 'load', base: new URL(modelPath, document.baseURI).href });
}

// The models this page offers. `models.json` beside the page lists them, the first being the
// default: [{"path": "model/", "label": "English"}, {"path": "multilingual/", "label": "Any
// language"}] (each path a bundle folder relative to the page, ending in "/"; the label is
// optional). Without that file (404, or offline with none cached) the page offers model/ alone.
async function modelChoices() {
  let response;
  try {
    response = await fetch('models.json', { cache: 'no-cache' });
  } catch {
    return [{ path: 'model/' }];
  }
  if (response.status === 404) return [{ path: 'model/' }];
  if (!response.ok) throw new Error(`models.json: HTTP ${response.status}`);
  let choices;
  try {
    choices = await response.json();
  } catch (err) {
    throw new Error(`models.json is not JSON: ${err.message}`);
  }
  if (!Array.isArray(choices) || choices.length === 0) {
    throw new Error('models.json must be a list of models, [{"path": "model/", "label": "English"}, …]');
  }
  choices.forEach(checkChoice);
  return choices;
}

// Refuses entry `choice` of models.json (the `index`th) unless it names a folder of this site.
function checkChoice(choice, index) {
  const where = `models.json, model ${index + 1}`;
  const path = choice?.path;
  if (typeof path !== 'string' || !path.endsWith('/')) {
    throw new Error(`${where}: "path" must be a bundle folder ending in "/", not ${JSON.stringify(path)}`);
  }
  if (new URL(path, document.baseURI).origin !== location.origin) {
    throw new Error(`${where}: "path" ${JSON.stringify(path)} is on another site`);
  }
  if (choice.label !== undefined && (typeof choice.label !== 'string' || choice.label.trim() === '')) {
    throw new Error(`${where}: "label" must be text, not ${JSON.stringify(choice.label)}`);
  }
}

// Offers `choices` in #model-choice (shown only for more than one) and returns the path to load:
// the visitor's earlier choice while it is still offered, else the first.
function offerModels(choices) {
  const select = $('model-choice');
  select.replaceChildren(...choices.map(({ path, label }) => new Option(label ?? path.replace(/\/$/, ''), path)));
  $('model-picker').hidden = choices.length < 2;
  let kept = null;
  try {
    kept = localStorage.getItem(CHOICE_KEY);
  } catch {
    // Storage refused (a private window): the first model, every visit.
  }
  const path = choices.some((c) => c.path === kept) ? kept : choices[0].path;
  select.value = path;
  return path;
}

// Loads the model chosen in #model-choice in place of the current one (kept for the next
// visit once it is ready); what the old one was asked fails with a message, and what it
// answered goes.
function switchModel() {
  modelPath = $('model-choice').value;
  worker?.terminate();
  for (const { reject } of pending.values()) reject(new Error('The model was changed before it answered.'));
  pending.clear();
  restarts = 0;
  clearError();
  result.textContent = '';
  delete result.dataset.label;
  delete result.dataset.score;
  $('explanation-view').hidden = true;
  $('read-view').hidden = true;
  $('batch-results').hidden = true;
  $('model-info').textContent = '';
  startWorker('Loading the model…');
}

async function start() {
  if (typeof WebAssembly !== 'object' || typeof Worker !== 'function') {
    setState('failed', 'Not available');
    $('retry').hidden = true;
    showError('This browser cannot run WebAssembly in a worker, so the model cannot run here.');
    return;
  }
  // The service worker keeps the page and the classifier for offline visits (secure origins
  // only: https or this machine).
  navigator.serviceWorker?.register('sw.js').catch((err) => console.warn('no offline use:', err));
  $('classify').addEventListener('click', classifyOne);
  $('explain').addEventListener('click', explainOne);
  $('classify-batch').addEventListener('click', classifyMany);
  $('review').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !$('classify').disabled) {
      event.preventDefault();
      classifyOne();
    }
  });
  // What is shown of an earlier review (its explanation, its read part) goes once it changes.
  $('review').addEventListener('input', () => {
    $('explanation-view').hidden = true;
    $('read-view').hidden = true;
  });
  $('retry').addEventListener('click', () => {
    restarts = 0;
    clearError();
    worker?.terminate();
    startWorker('Loading the model…');
  });
  $('model-choice').addEventListener('change', switchModel);
  try {
    modelPath = offerModels(await modelChoices());
  } catch (err) {
    setState('failed', 'Not available');
    $('retry').hidden = true;
    showError(err.message);
    return;
  }
  startWorker('Loading the model…');
}

start();
