// The page: talks to the classifier in worker.js and shows what it says.
const $ = (id) => document.getElementById(id);
const status = $('status');
const download = $('download');
const result = $('result');
const errorBox = $('error');

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  status.textContent = 'Not available';
}

let worker;
let nextId = 1;
const pending = new Map();

// Sends `message` to the worker and resolves with its answer.
function ask(message) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...message, id });
  });
}

const classify = (texts) => ask({ type: 'classify', texts });

function describe(p) {
  const percent = (100 * p.score).toFixed(1);
  return `${p.label} (probability of positive ${percent} %${p.truncated ? ', review truncated' : ''})`;
}

async function classifyOne() {
  const text = $('review').value;
  $('classify').disabled = true;
  try {
    const [p] = await classify([text]);
    result.textContent = describe(p);
    result.dataset.label = p.label;
    result.dataset.score = String(p.score);
    errorBox.hidden = true;
  } catch (err) {
    showError(err.message);
  } finally {
    $('classify').disabled = false;
  }
}

// Shows `text` with each explained unit highlighted: green pushed toward positive, red toward
// negative, stronger for a larger weight; the weight is on each span (`data-weight`).
function showExplanation(text, explanation) {
  const box = $('explanation');
  const largest = Math.max(1e-6, ...explanation.units.map((u) => Math.abs(u.weight)));
  const parts = [];
  let at = 0;
  for (const unit of explanation.units) {
    const start = text.indexOf(unit.text, at);
    if (start < 0) continue;
    parts.push(document.createTextNode(text.slice(at, start)));
    const span = document.createElement('span');
    span.textContent = unit.text;
    span.dataset.weight = String(unit.weight);
    const strength = (0.1 + 0.5 * Math.abs(unit.weight) / largest).toFixed(2);
    const rgb = unit.weight >= 0 ? '43, 138, 62' : '201, 42, 42';
    span.style.background = `rgba(${rgb}, ${strength})`;
    span.title = `${unit.weight >= 0 ? '+' : ''}${unit.weight.toFixed(4)}`;
    parts.push(span);
    at = start + unit.text.length;
  }
  parts.push(document.createTextNode(text.slice(at)));
  box.replaceChildren(...parts);
  box.dataset.score = String(explanation.score);
  box.dataset.granularity = explanation.granularity;
  const unit = { word: 'word', sentence: 'sentence', passage: 'run of sentences' }[explanation.granularity];
  $('explanation-caption').firstChild.textContent = `Each ${unit} left out in turn: `;
  $('explanation-view').hidden = false;
}

async function explainOne() {
  const text = $('review').value;
  const box = $('explanation');
  $('explain').disabled = true;
  box.setAttribute('aria-busy', 'true');
  try {
    showExplanation(text, await ask({ type: 'explain', text }));
    errorBox.hidden = true;
  } catch (err) {
    showError(err.message);
  } finally {
    box.removeAttribute('aria-busy');
    $('explain').disabled = false;
  }
}

async function classifyMany() {
  const lines = $('batch').value.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  if (lines.length === 0) return;
  $('classify-batch').disabled = true;
  try {
    const predictions = await classify(lines);
    const body = $('batch-results').querySelector('tbody');
    body.replaceChildren(...predictions.map((p, i) => {
      const row = document.createElement('tr');
      row.dataset.label = p.label;
      row.dataset.score = String(p.score);
      for (const [text, cls] of [[lines[i], ''], [p.label, p.label], [p.score.toFixed(4), '']]) {
        const cell = document.createElement('td');
        cell.textContent = text;
        if (cls) cell.className = cls;
        row.append(cell);
      }
      return row;
    }));
    $('batch-results').hidden = false;
  } catch (err) {
    showError(err.message);
  } finally {
    $('classify-batch').disabled = false;
  }
}

function start() {
  if (typeof WebAssembly !== 'object' || typeof Worker !== 'function') {
    showError('This browser cannot run WebAssembly in a worker, so the model cannot run here.');
    return;
  }
  const started = performance.now();
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onerror = (event) => showError(`The classifier failed to start: ${event.message ?? 'unknown error'}`);
  worker.onmessage = ({ data }) => {
    if (data.type === 'progress') {
      download.max = data.total || data.loaded;
      download.value = data.loaded;
      status.textContent = `Downloading the model: ${(data.loaded / 1e6).toFixed(1)} MB`;
    } else if (data.type === 'ready') {
      download.value = download.max;
      const m = data.manifest;
      status.textContent = `Model ready in ${((performance.now() - started) / 1000).toFixed(1)} s`;
      document.body.dataset.ready = 'true';
      const accuracy = m.test_metrics ? `, test accuracy ${(100 * m.test_metrics.accuracy).toFixed(1)} %` : '';
      $('model-info').textContent = `Model ${m.name}: ${m.max_seq_len} tokens, threshold ${m.threshold}${accuracy}.`;
      $('classify').disabled = false;
      $('explain').disabled = false;
      $('classify-batch').disabled = false;
    } else if (data.type === 'result') {
      pending.get(data.id)?.resolve(data.value);
      pending.delete(data.id);
    } else if (data.type === 'error') {
      const waiting = pending.get(data.id);
      pending.delete(data.id);
      if (waiting) waiting.reject(new Error(data.message));
      else showError(`The model could not be loaded: ${data.message}`);
    }
  };
  worker.postMessage({ type: 'load', base: new URL('model/', document.baseURI).href });
  $('classify').addEventListener('click', classifyOne);
  $('explain').addEventListener('click', explainOne);
  $('classify-batch').addEventListener('click', classifyMany);
}

start();
