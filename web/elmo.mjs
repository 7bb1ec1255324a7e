// ELMo vectors in the browser: an elmo-edge .onnx model on onnxruntime-web (WASM).
//
//   import { Embedder, tokenize } from './elmo.mjs';
//   const emb = await Embedder.create('model.onnx', { threads: 2 });
//   const [v] = await emb.embedBatch([tokenize('The cat sat.')], { mix: 'average' });
//   // v.dims = [4, 256] (tokens, 2P); v.data: Float32Array
//
// Same rules as the Python runtime (elmo_runtime): char ids, <S>/</S> rows, stateless (every
// sentence starts from a zero LSTM state), scalar mixes, metadata checks. Reads bilm-tf byte
// models (format version 2) and ELMoForManyLangs conversions (version 3: a learned code-point
// vocabulary from the model's metadata, <bos>/<eos> rows, word_ids when the model has a word
// table). The format versions and metadata keys come from contract.json, generated from
// format/contract.py.

import contract from './contract.json' with { type: 'json' };
import { checkSentence, pack } from './src/chars.mjs';
import { packCodepoints } from './src/codepoints.mjs';
import { checkMetadata, readMetadata } from './src/metadata.mjs';
import { applyMix, resolveMix } from './src/mix.mjs';

export { contract };
export { tokenize } from './src/tokenize.mjs';
export { pack, tokensToIds } from './src/chars.mjs';
export { CodepointScheme, packCodepoints } from './src/codepoints.mjs';
export { applyMix, resolveMix } from './src/mix.mjs';
export { checkMetadata, readMetadata } from './src/metadata.mjs';

const ORT_DIST = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url);

async function loadOrt(ort, wasmPaths) {
  const module = ort ?? (await import(new URL('ort.wasm.min.mjs', ORT_DIST).href));
  module.env.wasm.wasmPaths = wasmPaths ?? ORT_DIST.href;
  return module;
}

async function fetchBytes(model) {
  if (model instanceof Uint8Array) return model;
  if (model instanceof ArrayBuffer) return new Uint8Array(model);
  const response = await fetch(model);
  if (!response.ok) throw new Error(`${model}: cannot load the model (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

/** ELMo vectors from an elmo-edge ONNX model, computed on this device. */
export class Embedder {
  /** Use {@link Embedder.create}. */
  constructor(ort, session, info, where, loadMs) {
    this.ort = ort;
    this.session = session;
    /** What the metadata says: {options, nLayers (L+1), dim (2P), maxChars, quantization, ...}. */
    this.info = info;
    this.where = where;
    /** Milliseconds spent fetching the model and creating the session. */
    this.loadMs = loadMs;
    this.queue = Promise.resolve();
  }

  /**
   * Load a model; refuses files that are not elmo-edge models of a format version this
   * code reads (web/contract.json: 2, and 3 for ELMoForManyLangs conversions), with the
   * Python runtime's messages.
   * @param {string|URL|Uint8Array|ArrayBuffer} modelUrl
   * @param {{threads?: number, executionProviders?: string[], ort?: object,
   *          wasmPaths?: string}} [options] threads: WASM threads (more than 1 needs a
   *          cross-origin isolated page; onnxruntime-web fixes the count when the page's
   *          first session is created); ort: an onnxruntime-web module imported by the caller
   *          (default: the WASM-only build from node_modules next to this file; pass the full
   *          build, ort.all.min.mjs, to try other executionProviders); wasmPaths: where its
   *          .wasm files are.
   * @returns {Promise<Embedder>}
   */
  static async create(modelUrl, { threads, executionProviders = ['wasm'], ort, wasmPaths } = {}) {
    const start = performance.now();
    const where = typeof modelUrl === 'string' || modelUrl instanceof URL ? String(modelUrl) : 'model';
    const bytes = await fetchBytes(modelUrl);
    const info = checkMetadata(readMetadata(bytes, where), contract, where);
    const runtime = await loadOrt(ort, wasmPaths);
    if (threads !== undefined) {
      if (!Number.isInteger(threads) || threads <= 0) {
        throw new Error(`threads must be a positive integer, found ${threads}`);
      }
      runtime.env.wasm.numThreads = threads;
    }
    // logSeverityLevel 3: ort reports the contract's optional inputs ("Initializer ... appears
    // in graph inputs") as errors otherwise.
    const session = await runtime.InferenceSession.create(bytes, {
      executionProviders,
      logSeverityLevel: 3,
      graphOptimizationLevel: 'all',
    });
    return new Embedder(runtime, session, info, where, performance.now() - start);
  }

  /**
   * Vectors of each sentence, in input order, from one forward pass.
   * @param {string[][]} tokenLists sentences as arrays of non-empty token strings
   * @param {{mix?: 'all'|'top'|'average'|{weights: number[], gamma: number,
   *          do_layer_norm?: boolean}}} [options]
   * @returns {Promise<{data: Float32Array, dims: number[]}[]>} float32, row-major; dims
   *   [L+1, n, 2P] for mix 'all' (the default), [n, 2P] otherwise
   */
  embedBatch(tokenLists, { mix } = {}) {
    const run = this.queue.then(() => this.#forward(tokenLists, mix));
    this.queue = run.catch(() => {});
    return run;
  }

  async #forward(tokenLists, mix) {
    const sentences = Array.from(tokenLists);
    sentences.forEach(checkSentence);
    const resolved = resolveMix(mix, this.info.nLayers);
    if (!sentences.length) return [];
    const { nLayers, dim, maxChars, vocabulary } = this.info;
    const packed = vocabulary ? packCodepoints(sentences, vocabulary) : pack(sentences, maxChars);
    const { Tensor } = this.ort;
    const feeds = {
      [contract.inputs.token_chars]: new Tensor('int32', packed.tokenChars, [packed.rows, maxChars]),
      [contract.inputs.token_index]: new Tensor('int32', packed.tokenIndex, [packed.batch, packed.steps]),
    };
    if (packed.wordIds) {
      feeds[contract.inputs.word_ids] = new Tensor('int32', packed.wordIds, [packed.rows]);
    }
    let outputs;
    try {
      outputs = await this.session.run(feeds, [contract.outputs.layers]);
    } catch (e) {
      throw new Error(`${this.where}: onnxruntime-web failed on a batch of ${packed.batch} `
        + `sentences x ${packed.steps} steps: ${String(e.message ?? e).split('\n')[0]}`);
    }
    const layers = outputs[contract.outputs.layers];
    const all = layers.data;
    const steps = packed.steps;
    const result = sentences.map((sentence, b) => {
      const n = sentence.length;
      const out = new Float32Array(nLayers * n * dim);
      for (let l = 0; l < nLayers; l++) {
        const from = ((b * nLayers + l) * steps + 1) * dim;
        out.set(all.subarray(from, from + n * dim), l * n * dim);
      }
      return applyMix(out, [nLayers, n, dim], resolved);
    });
    layers.dispose?.();
    return result;
  }

  /** Free the session. */
  async release() {
    await this.session.release();
  }
}
