// The demo page: type sentences, pick a word, watch its vector move with context.
// Query parameters: ?model=URL (default model.onnx, as `elmo web` serves it), ?threads=N.
import { applyMix, Embedder, resolveMix, tokenize } from './elmo.mjs';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const COLORS = ['#3559e0', '#e0582f', '#1f9d6b', '#a23bd1', '#d1a01f', '#1b9fc6', '#c43d74',
  '#5b6b7f', '#7aa61a', '#8c5a2b'];
const STOP = new Set(['the', 'a', 'an', 'of', 'to', 'and', 'in', 'on', 'his', 'her', 'its', 'is']);
const state = { embedder: null, sentences: [], vectors: [], word: null, busy: null };

function setStatus(text, error = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
}

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

/** Vector of token j of sentence s at layer l (l = nLayers: the mix). */
function vectorAt(s, j, l) {
  const { all, mixed } = state.vectors[s];
  const [nLayers, n, dim] = all.dims;
  if (l === nLayers) return mixed.data.subarray(j * dim, (j + 1) * dim);
  const from = (l * n + j) * dim;
  return all.data.subarray(from, from + dim);
}

function occurrences(word) {
  const found = [];
  state.sentences.forEach((tokens, s) => tokens.forEach((t, j) => {
    if (t === word) found.push({ s, j });
  }));
  return found;
}

function pickDefaultWord() {
  if (state.word && occurrences(state.word).length) return state.word;
  const counts = new Map();
  for (const t of state.sentences.flat()) {
    if (/\p{L}/u.test(t) && !STOP.has(t.toLowerCase())) counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  let best = null;
  for (const [t, c] of counts) if (best === null || c > counts.get(best)) best = t;
  return best;
}

function renderSentences(latencies) {
  const list = $('sentences');
  list.replaceChildren();
  const picked = occurrences(state.word);
  state.sentences.forEach((tokens, s) => {
    const li = document.createElement('li');
    tokens.forEach((t, j) => {
      const chip = document.createElement('span');
      chip.className = 'tok';
      chip.textContent = t;
      const k = picked.findIndex((o) => o.s === s && o.j === j);
      if (k >= 0) {
        chip.classList.add('sel');
        chip.style.background = COLORS[k % COLORS.length];
        chip.title = `occurrence ${k + 1}`;
      }
      chip.addEventListener('click', () => { state.word = t; render(latencies); });
      li.append(chip);
    });
    const ms = document.createElement('span');
    ms.className = 'ms';
    ms.textContent = `${tokens.length} tokens · ${latencies[s].toFixed(1)} ms`;
    li.append(ms);
    list.append(li);
  });
}

function svg(tag, attrs, text) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function renderChart() {
  const chart = $('chart');
  chart.replaceChildren();
  $('legend').replaceChildren();
  $('matrix').replaceChildren();
  $('word').textContent = state.word ?? '…';
  const occ = occurrences(state.word);
  const nLayers = state.embedder.info.nLayers;
  const mixName = $('mix').value;
  const labels = [...Array(nLayers).keys()].map((l) => (l === 0 ? 'layer 0 (chars)' : `layer ${l} (LSTM)`));
  labels.push(`mix (${mixName})`);
  const [x0, x1, y0, y1] = [56, 462, 20, 260];
  const lo = 0;
  const x = (i) => x0 + ((x1 - x0) * i) / (labels.length - 1);
  const y = (v) => y1 - ((y1 - y0) * (v - lo)) / (1 - lo);
  for (let t = 0; t <= 5; t++) {
    const v = lo + ((1 - lo) * t) / 5;
    chart.append(svg('line', { x1: x0, x2: x1, y1: y(v), y2: y(v), stroke: '#eef0f3' }));
    chart.append(svg('text', { x: x0 - 8, y: y(v) + 4, 'text-anchor': 'end' }, v.toFixed(1)));
  }
  labels.forEach((label, i) => {
    chart.append(svg('text', { x: x(i), y: y1 + 20, 'text-anchor': 'middle' }, label));
  });
  chart.append(svg('text', { x: 14, y: (y0 + y1) / 2, transform: `rotate(-90 14 ${(y0 + y1) / 2})`,
    'text-anchor': 'middle' }, 'cosine'));
  if (occ.length < 2) {
    chart.append(svg('text', { x: (x0 + x1) / 2, y: (y0 + y1) / 2, 'text-anchor': 'middle' },
      state.word ? `“${state.word}” occurs once: add a sentence that uses it again` : 'pick a word'));
    return;
  }
  const pairs = [];
  for (let a = 0; a < occ.length; a++) for (let b = a + 1; b < occ.length; b++) pairs.push([a, b]);
  pairs.slice(0, COLORS.length).forEach(([a, b], p) => {
    const values = labels.map((_, l) => cosine(vectorAt(occ[a].s, occ[a].j, l), vectorAt(occ[b].s, occ[b].j, l)));
    const color = COLORS[p % COLORS.length];
    const points = values.map((v, i) => `${x(i)},${y(Math.max(lo, v))}`).join(' ');
    chart.append(svg('polyline', { points, fill: 'none', stroke: color, 'stroke-width': 2.2 }));
    values.forEach((v, i) => {
      const dot = svg('circle', { cx: x(i), cy: y(Math.max(lo, v)), r: 3.5, fill: color });
      dot.append(svg('title', {}, `${labels[i]}: ${v.toFixed(3)}`));
      chart.append(dot);
    });
    const item = document.createElement('span');
    item.innerHTML = `<i style="background:${color}"></i>sentence ${occ[a].s + 1} ↔ ${occ[b].s + 1}: `
      + `<b>${values.at(-1).toFixed(2)}</b>`;
    $('legend').append(item);
  });
  const head = document.createElement('tr');
  head.append(document.createElement('th'));
  occ.forEach((o) => { const th = document.createElement('th'); th.textContent = `s${o.s + 1}`; head.append(th); });
  $('matrix').append(head);
  occ.forEach((oa) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    th.textContent = `s${oa.s + 1}`;
    tr.append(th);
    occ.forEach((ob) => {
      const v = cosine(vectorAt(oa.s, oa.j, nLayers), vectorAt(ob.s, ob.j, nLayers));
      const td = document.createElement('td');
      td.textContent = v.toFixed(2);
      td.style.background = `rgba(53, 89, 224, ${Math.max(0, v) ** 2 * 0.55})`;
      tr.append(td);
    });
    $('matrix').append(tr);
  });
}

function render(latencies) {
  state.word = pickDefaultWord();
  renderSentences(latencies);
  renderChart();
}

async function embedAll() {
  const lines = $('text').value.split('\n').map((l) => l.trim()).filter(Boolean);
  const sentences = lines.map(tokenize).filter((t) => t.length);
  const mix = resolveMix($('mix').value, state.embedder.info.nLayers);
  const vectors = [];
  const latencies = [];
  for (const tokens of sentences) {
    const t0 = performance.now();
    const [all] = await state.embedder.embedBatch([tokens]);
    latencies.push(performance.now() - t0);
    vectors.push({ all, mixed: applyMix(all.data, all.dims, mix === 'all' ? 'top' : mix) });
  }
  state.sentences = sentences;
  state.vectors = vectors;
  render(latencies);
  const total = latencies.reduce((a, b) => a + b, 0);
  const tokens = sentences.reduce((a, s) => a + s.length, 0);
  const { embedder } = state;
  setStatus(`Model loaded in ${(embedder.loadMs / 1000).toFixed(2)} s · ${sentences.length} sentences, `
    + `${tokens} tokens in ${total.toFixed(0)} ms (${(total / Math.max(1, sentences.length)).toFixed(1)} ms `
    + `per sentence) · ${embedder.ort.env.wasm.numThreads ?? 1} WASM thread(s) · `
    + `${embedder.info.quantization.mode === 'none' ? 'float32' : embedder.info.quantization.mode}`);
  document.body.dataset.state = 'ready';
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    document.body.dataset.state = 'busy';
    state.busy = embedAll().catch(fail);
  }, 250);
}

function fail(e) {
  setStatus(`Error: ${e.message ?? e}`, true);
  document.body.dataset.state = 'error';
  console.warn(e);
}

async function main() {
  const threads = params.has('threads') ? Number(params.get('threads')) : undefined;
  const model = params.get('model') ?? 'model.onnx';
  state.embedder = await Embedder.create(model, { threads });
  await state.embedder.embedBatch([['warm', 'up']]); // the first run compiles kernels: keep it out of the latencies
  const { info } = state.embedder;
  $('dims').textContent = `${info.nLayers} layers × ${info.dim} dims, at most ${info.maxChars} characters per token`;
  $('text').addEventListener('input', schedule);
  $('mix').addEventListener('change', schedule);
  await embedAll();
}

/** Cache the page, onnxruntime-web and the model, so that the page also reloads offline. */
async function keepOffline(model) {
  if (!('serviceWorker' in navigator)) return;
  try {
    await navigator.serviceWorker.register(`sw.js?model=${encodeURIComponent(model)}`);
    state.offline = await navigator.serviceWorker.ready.then(() => true);
  } catch (e) {
    console.warn(`offline copy unavailable: ${e.message ?? e}`);
  }
}

window.elmoDemo = state;
main().then(() => keepOffline(params.get('model') ?? 'model.onnx')).catch(fail);
