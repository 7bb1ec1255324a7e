// The scalar mix of the L+1 layers (elmo_runtime/mix.py; docs/elmo-spec.md, "Scalar mix"):
// ELMo_k = gamma * sum_j softmax(w)_j * h_{k,j}, accumulated in float64, returned as float32.
// Layer norm (do_layer_norm) uses the mean and variance of each layer over the sentence.

export const LAYER_NORM_EPS = 1e-12;
export const MODES = ['all', 'top', 'average'];

/**
 * Validate a mix for a model with `nLayers` (L+1) layers.
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
  const finite = (v) => typeof v === 'number' && Number.isFinite(v);
  if (!Array.isArray(weights) || !weights.every(finite)) {
    throw new Error(`weights must be a list of finite numbers, found ${JSON.stringify(weights)}`);
  }
  if (weights.length !== nLayers) {
    throw new Error(`mix: expected ${nLayers} weights (the model has ${nLayers} layers), found ${weights.length}`);
  }
  if (!finite(gamma)) throw new Error(`gamma must be a finite number, found ${JSON.stringify(gamma)}`);
  if (typeof layerNorm !== 'boolean') {
    throw new Error(`do_layer_norm must be true or false, found ${JSON.stringify(layerNorm)}`);
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
  for (let i = 0; i < size; i++) data[i] = mix.gamma * acc[i];
  return { data, dims: [n, dim] };
}
