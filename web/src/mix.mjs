// The scalar mix of the L+1 layers (elmo_runtime/mix.py; docs/elmo-spec.md, "Scalar mix"):
// ELMo_k = gamma * sum_j softmax(w)_j * h_{k,j}, accumulated in float64, returned as float32.
// Layer norm (do_layer_norm) uses the mean and variance of each layer over the sentence.
// Weights are any finite numbers (pre-softmax; the softmax subtracts their maximum); |gamma| is
// at most the largest float32 (contract.json bounds.max_gamma). What mix.py refuses is refused
// here with its words (tests/web feed both the same values).

import contract from '../contract.json' with { type: 'json' };

export const LAYER_NORM_EPS = 1e-12;
export const MODES = ['all', 'top', 'average'];
export const MAX_GAMMA = contract.bounds.max_gamma;

/**
 * A float as Python's repr writes it (shortest round-trip digits; exponent form below 1e-4
 * and from 1e16), so that messages name values in the same words as mix.py.
 * @param {number} x
 */
export function pyFloat(x) {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, power] = x.toExponential().split('e');
  const exp = Number(power);
  const sign = x < 0 ? '-' : '';
  const digits = mantissa.replace('-', '').replace('.', '');
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  if (exp >= digits.length - 1) return `${sign}${digits}${'0'.repeat(exp - digits.length + 1)}.0`;
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
}

/** A string as Python's repr writes it (quotes chosen as Python chooses them). */
function pyString(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const escapes = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', [quote]: `\\${quote}` };
  return quote + text.replace(/[\\\n\r\t'"]/g, (c) => escapes[c] ?? c) + quote;
}

/** A value in a message as mix.py's `show` writes it: Python's repr, numbers as floats. */
export function show(value) {
  if (typeof value === 'number') return pyFloat(value);
  if (typeof value === 'string') return pyString(value);
  if (value === null || value === undefined) return 'None';
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (Array.isArray(value)) return `[${value.map(inner).join(', ')}]`;
  if (typeof value === 'object') {
    return `{${Object.entries(value).map(([k, v]) => `${pyString(k)}: ${inner(v)}`).join(', ')}}`;
  }
  return String(value);
}

/** Inside a list or object, a whole number is an int to Python's JSON reader. */
function inner(value) {
  return Number.isSafeInteger(value) ? String(value) : show(value);
}

function number(value, name) {
  if (typeof value !== 'number') throw new Error(`${name} must be numbers, found ${show(value)}`);
  if (!Number.isFinite(value)) throw new Error(`${name} must be finite, found ${show(value)}`);
  return value;
}

/**
 * Validate a mix for a model with `nLayers` (L+1) layers (mix.py's ScalarMix and check_mix:
 * the same checks in the same order, the same messages).
 * @param {'all'|'top'|'average'|{weights: number[], gamma: number, do_layer_norm?: boolean}} mix
 * @param {number} nLayers
 * @returns {'all'|'top'|{weights: number[], gamma: number, do_layer_norm: boolean}}
 */
export function resolveMix(mix, nLayers) {
  if (mix === undefined || mix === null || mix === 'all') return 'all';
  if (mix === 'top') return 'top';
  if (mix === 'average') return { weights: new Array(nLayers).fill(0), gamma: 1, do_layer_norm: false };
  if (typeof mix === 'string') {
    throw new Error(`unknown mix '${mix}'; choose one of ${MODES.join(', ')} or {weights, gamma, do_layer_norm}`);
  }
  const { weights, gamma, do_layer_norm: layerNorm = false } = mix;
  if (!Array.isArray(weights)) {
    throw new Error(`weights must be a list of numbers, found ${show(weights)}`);
  }
  weights.forEach((w) => number(w, 'weights'));
  if (!weights.length) throw new Error('a scalar mix needs at least one weight');
  number(gamma, 'gamma');
  if (Math.abs(gamma) > MAX_GAMMA) {
    throw new Error(`gamma must be within ±${show(MAX_GAMMA)} (the largest float32; `
      + `the vectors are float32), found ${show(gamma)}`);
  }
  if (typeof layerNorm !== 'boolean') {
    throw new Error(`do_layer_norm must be true or false, found ${show(layerNorm)}`);
  }
  if (weights.length !== nLayers) {
    throw new Error(`mix: expected ${nLayers} weights (the model has ${nLayers} layers), found ${weights.length}`);
  }
  return { weights: [...weights], gamma, do_layer_norm: layerNorm };
}

/** softmax(weights) in float64. */
export function softmax(weights) {
  const top = Math.max(...weights);
  const e = weights.map((w) => Math.exp(w - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/**
 * Apply a resolved mix to one sentence's layers.
 * @param {Float32Array} layers row-major (L+1, n, dim)
 * @param {number[]} dims [L+1, n, dim]
 * @param {ReturnType<typeof resolveMix>} mix
 * @returns {{data: Float32Array, dims: number[]}} (L+1, n, dim) for 'all', else (n, dim)
 */
export function applyMix(layers, dims, mix) {
  const [nLayers, n, dim] = dims;
  const size = n * dim;
  if (mix === 'all') return { data: layers, dims: [nLayers, n, dim] };
  if (mix === 'top') return { data: layers.slice((nLayers - 1) * size, nLayers * size), dims: [n, dim] };
  const w = softmax(mix.weights);
  const acc = new Float64Array(size);
  for (let l = 0; l < nLayers; l++) {
    const layer = layers.subarray(l * size, (l + 1) * size);
    let mean = 0;
    let scale = 1;
    if (mix.do_layer_norm && size > 0) {
      for (let i = 0; i < size; i++) mean += layer[i];
      mean /= size;
      let variance = 0;
      for (let i = 0; i < size; i++) variance += (layer[i] - mean) ** 2;
      variance /= size;
      scale = 1 / Math.sqrt(variance + LAYER_NORM_EPS);
    }
    for (let i = 0; i < size; i++) acc[i] += w[l] * ((layer[i] - mean) * scale);
  }
  const data = new Float32Array(size);
  let overflow = false;
  for (let i = 0; i < size; i++) {
    const v = mix.gamma * acc[i];
    data[i] = v;
    overflow ||= Number.isFinite(v) && !Number.isFinite(data[i]);
  }
  if (overflow && Math.abs(mix.gamma) > 1) {
    throw new Error(`gamma ${show(mix.gamma)} makes these vectors overflow float32 `
      + `(largest ${show(MAX_GAMMA)}); use a smaller gamma`);
  }
  return { data, dims: [n, dim] };
}
