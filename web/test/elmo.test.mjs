// Unit tests of the pure parts of elmo.mjs (no onnxruntime needed): `npm test --prefix web`.
// The comparisons with the Python runtime are in tests/web (pytest).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  applyMix, checkMetadata, contract, pack, readMetadata, resolveMix, tokensToIds,
} from '../elmo.mjs';
import * as chars from '../src/chars.mjs';
import { checkSentence } from '../src/chars.mjs';

const MODEL = new URL('../../runtime/elmo_runtime/models/default.int8.onnx', import.meta.url);

test('the char-id constants are the contract\'s', () => {
  const { scheme: _name, ...constants } = contract.char_ids;
  const { max_chars: _max, ...ours } = chars.scheme(50);
  assert.deepEqual(ours, constants);
});

test('token rows: 48-byte cut on UTF-8 bytes, boundary tokens, +1 shift', () => {
  const ids = tokensToIds(['ab', 'é'.repeat(30), '<S>', '</S>'], 50);
  const row = (i) => Array.from(ids.subarray(i * 50, (i + 1) * 50));
  assert.deepEqual(row(0).slice(0, 5), [259, 98, 99, 260, 261]);
  assert.equal(row(1)[49], 260); // EOW right after 48 bytes
  assert.deepEqual(row(1).slice(1, 3), [0xc3 + 1, 0xa9 + 1]);
  assert.deepEqual(row(2).slice(0, 4), [259, 257, 260, 261]);
  assert.deepEqual(row(3).slice(0, 4), [259, 258, 260, 261]);
});

test('pack: boundaries are rows 0 and 1, tokens in order of first use, -1 padding', () => {
  const p = pack([['b', 'a', 'b'], []], 50);
  assert.equal(p.rows, 4);
  assert.deepEqual(Array.from(p.tokenIndex), [0, 2, 3, 2, 1, 0, 1, -1, -1, -1]);
  assert.deepEqual([p.batch, p.steps], [2, 5]);
});

test('sentences are lists of non-empty strings', () => {
  assert.throws(() => checkSentence('a b', 0), /sentence 0: expected a list of tokens, got a string/);
  assert.throws(() => checkSentence(['a', ''], 3), /sentence 3: token 1 is an empty string/);
  assert.throws(() => checkSentence(['a', 5], 1), /token 1 is a number/);
});

test('the bundled model\'s metadata reads and checks', () => {
  const meta = readMetadata(new Uint8Array(readFileSync(MODEL)), 'int8.onnx');
  const info = checkMetadata(meta, contract, 'int8.onnx');
  assert.equal(meta['elmo_edge.format'], 'elmo-edge-onnx');
  assert.equal(info.nLayers, info.options.lstm.n_layers + 1);
  assert.equal(info.dim, 2 * info.options.lstm.projection_dim);
});

test('unknown format versions and other files are refused by name', () => {
  const meta = readMetadata(new Uint8Array(readFileSync(MODEL)), 'm.onnx');
  const v = contract.format_version;
  const unknown = Math.max(...contract.python_reads) + 1;
  assert.throws(() => checkMetadata({ ...meta, 'elmo_edge.format_version': String(unknown) }, contract, 'm.onnx'),
    { message: `m.onnx: elmo-edge model format version '${unknown}' is not supported (elmo.mjs reads version ${v}); upgrade elmo-edge` });
  for (const other of contract.python_reads.filter((x) => x !== v)) {
    assert.throws(() => checkMetadata({ ...meta, 'elmo_edge.format_version': String(other) }, contract, 'm.onnx'),
      new RegExp(`version '${other}' is read by the Python runtime but not by elmo.mjs`));
  }
  assert.throws(() => checkMetadata({ ...meta, 'elmo_edge.format_version': '0' }, contract, 'm.onnx'),
    /re-export it with this elmo-edge/);
  assert.throws(() => checkMetadata({}, contract, 'x.onnx'), /x.onnx: not an elmo-edge model/);
  assert.throws(() => readMetadata(new Uint8Array([0x0a, 0xff]), 'bad.onnx'), /bad.onnx: not an ONNX model/);
});

test('mixes: shapes and arithmetic', () => {
  const layers = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // (3, 2, 2)
  assert.deepEqual(applyMix(layers, [3, 2, 2], resolveMix('all', 3)).dims, [3, 2, 2]);
  assert.deepEqual(Array.from(applyMix(layers, [3, 2, 2], resolveMix('top', 3)).data), [9, 10, 11, 12]);
  assert.deepEqual(Array.from(applyMix(layers, [3, 2, 2], resolveMix('average', 3)).data), [5, 6, 7, 8]);
  const custom = applyMix(layers, [3, 2, 2], resolveMix({ weights: [0, 0, Math.log(2)], gamma: 2 }, 3));
  assert.ok(Math.abs(custom.data[0] - (2 * (1 + 5 + 2 * 9)) / 4) < 1e-5);
  const normed = applyMix(layers, [3, 2, 2], resolveMix({ weights: [0, 0, 0], gamma: 1, do_layer_norm: true }, 3));
  assert.ok(Math.abs(normed.data.reduce((a, b) => a + b, 0)) < 1e-5);
  assert.throws(() => resolveMix({ weights: [1, 2], gamma: 1 }, 3), /expected 3 weights/);
  assert.throws(() => resolveMix('bottom', 3), /unknown mix 'bottom'/);
});
