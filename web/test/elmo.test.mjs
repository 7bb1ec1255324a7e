// Unit tests of the pure parts of elmo.mjs (no onnxruntime needed): `npm test --prefix web`.
// The comparisons with the Python runtime are in tests/web (pytest).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  applyMix, checkMetadata, contract, pack, readMetadata, resolveMix, tokenize, tokensToIds,
} from '../elmo.mjs';
import * as chars from '../src/chars.mjs';
import { checkSentence } from '../src/chars.mjs';
import * as cp from '../src/codepoints.mjs';

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
  const cp = contract.codepoint_format_version;
  const unknown = Math.max(...contract.python_reads) + 1;
  assert.throws(() => checkMetadata({ ...meta, 'elmo_edge.format_version': String(unknown) }, contract, 'm.onnx'),
    { message: `m.onnx: elmo-edge model format version '${unknown}' is not supported (elmo.mjs reads versions ${v} and ${cp}); upgrade elmo-edge` });
  // a version Python reads and elmo.mjs does not (none today): refused by name
  const older = { ...contract, codepoint_format_version: undefined };
  assert.throws(() => checkMetadata({ ...meta, 'elmo_edge.format_version': String(cp) }, older, 'm.onnx'),
    new RegExp(`version '${cp}' is read by the Python runtime but not by elmo.mjs`));
  // version 3 with bilm-tf byte ids: the version, the scheme and the options disagree
  assert.throws(() => checkMetadata({ ...meta, 'elmo_edge.format_version': String(cp) }, contract, 'm.onnx'),
    { message: `m.onnx: format version ${cp}, char-id scheme None and options char_cnn.vocabulary 'bytes' disagree` });
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

function codepointMeta(base, { words = true, drop = null } = {}) {
  const chars = Object.fromEntries(['a', 'b', 'é', '🙂', ...cp.CHAR_SPECIALS].map((c, i) => [c, i]));
  if (drop) delete chars[drop];
  const vocab = { scheme: cp.SCHEME_NAME, id_shift: 1, max_chars: 8, markers: 'swapped', chars };
  if (words) vocab.words = { '<oov>': 0, '<bos>': 1, '<eos>': 2, '<pad>': 3, ab: 4 };
  const options = JSON.parse(base['elmo_edge.options']);
  options.char_cnn = { ...options.char_cnn, vocabulary: 'codepoint', max_characters_per_token: 8,
    n_characters: Object.keys(chars).length + 1 };
  if (words) options.word_embedding = { dim: 4, n_words: 5 };
  return { ...base, 'elmo_edge.format_version': String(contract.codepoint_format_version),
    'elmo_edge.options': JSON.stringify(options), 'elmo_edge.char_ids': JSON.stringify(vocab) };
}

test('version 3: a code-point vocabulary, swapped markers, word ids, code-point cut', () => {
  const base = readMetadata(new Uint8Array(readFileSync(MODEL)), 'm.onnx');
  const info = checkMetadata(codepointMeta(base), contract, 'm.onnx');
  assert.equal(info.charScheme, 'codepoint-vocab');
  assert.equal(info.hasWords, true);
  const p = cp.packCodepoints([['ab', '🙂'.repeat(7), 'ab', '<bos>', 'x']], info.vocabulary);
  const row = (i) => Array.from(p.tokenChars.subarray(i * 8, (i + 1) * 8));
  // ids: a0 b1 é2 🙂3 <bos>4 <eos>5 <oov>6 <pad>7 <bow>8 <eow>9, +1
  assert.deepEqual(row(0), [10, 5, 9, 8, 8, 8, 8, 8]); // <bos>
  assert.deepEqual(row(1), [10, 6, 9, 8, 8, 8, 8, 8]); // <eos>
  assert.deepEqual(row(2), [10, 1, 2, 9, 8, 8, 8, 8]); // ab
  assert.deepEqual(row(3), [10, 4, 4, 4, 4, 4, 4, 9]); // cut to 6 code points, not code units
  assert.deepEqual(row(4), [10, 7, 9, 8, 8, 8, 8, 8]); // x: <oov>
  assert.deepEqual(Array.from(p.tokenIndex), [0, 2, 3, 2, 0, 4, 1]);
  assert.deepEqual(Array.from(p.wordIds), [1, 2, 4, 0, 0]);
  const noWords = checkMetadata(codepointMeta(base, { words: false }), contract, 'm.onnx');
  assert.equal(cp.packCodepoints([['a']], noWords.vocabulary).wordIds, null);
  assert.throws(() => checkMetadata(codepointMeta(base, { drop: '<bow>' }), contract, 'efml.onnx'),
    { message: 'efml.onnx: char vocabulary lacks <bow>' });
  const bad = codepointMeta(base);
  bad['elmo_edge.format_version'] = String(contract.format_version);
  assert.throws(() => checkMetadata(bad, contract, 'm.onnx'), /disagree/);
});

test('the code-point scheme constants are the contract\'s', () => {
  const c = contract.codepoint_char_ids;
  assert.deepEqual([cp.SCHEME_NAME, cp.ID_SHIFT, cp.CHAR_SPECIALS, cp.WORD_SPECIALS, [cp.BOS, cp.EOS]],
    [c.scheme, c.id_shift, c.char_specials, c.word_specials, c.boundaries]);
  assert.equal(contract.inputs.word_ids, 'word_ids');
});

test('mix values: any finite pre-softmax weights, |gamma| up to the largest float32', () => {
  const layers = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // (3, 2, 2)
  // AllenNLP's way to pick one layer: the middle one, exactly
  const pick = applyMix(layers, [3, 2, 2], resolveMix({ weights: [-9e10, 1, -9e10], gamma: 1 }, 3));
  assert.deepEqual(Array.from(pick.data), [5, 6, 7, 8]);
  const far = resolveMix({ weights: [-1.7e308, 1.7e308, 0], gamma: 1 }, 3);
  assert.deepEqual(Array.from(applyMix(layers, [3, 2, 2], far).data), [5, 6, 7, 8]);
  assert.throws(() => resolveMix({ weights: [0, 0, 0], gamma: 1e39 }, 3),
    { message: 'gamma must be within ±3.4028234663852886e+38 (the largest float32; the vectors are float32), found 1e+39' });
  assert.throws(() => resolveMix({ weights: [0, Infinity, 0], gamma: 1 }, 3), { message: 'weights must be finite, found inf' });
  const big = resolveMix({ weights: [0, 0, 0], gamma: 1e38 }, 3);
  assert.throws(() => applyMix(layers, [3, 2, 2], big), /gamma 1e\+38 makes these vectors overflow float32/);
});

test('sentences over the token bound are refused with the Python words', () => {
  const n = contract.bounds.max_sentence_tokens;
  checkSentence(new Array(n).fill('a'), 0);
  assert.throws(() => checkSentence(new Array(n + 1).fill('a'), 2), {
    message: `sentence 2: ${n + 1} tokens, more than ${n} (the most a sentence may have: memory `
      + 'grows with it); split it',
  });
});

test('composed and decomposed text: the same tokens and the same char ids', () => {
  const nfd = 'cafe\u0301 cre\u0300me bru\u0302le\u0301e';
  assert.deepEqual(tokenize(nfd), ['café', 'crème', 'brûlée']);
  assert.deepEqual(tokenize('हिन्दी भाषा'), ['हिन्दी', 'भाषा']);
  assert.deepEqual(Array.from(tokensToIds(['cafe\u0301'], 50)), Array.from(tokensToIds(['café'], 50)));
});
