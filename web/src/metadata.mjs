// An elmo-edge model describes itself in the ONNX ModelProto's metadata_props; onnxruntime-web
// does not expose them, so they are read here from the model bytes (the top-level protobuf
// fields only: the graph, field 7, is skipped by its length) and checked as
// elmo_runtime/format/contract.py's parse_metadata checks them, with the same advice. elmo.mjs
// reads the bilm-tf byte char-id format (contract.format_version) and the learned code-point
// vocabulary of ELMoForManyLangs conversions (contract.codepoint_format_version); a version
// only the Python runtime reads (in contract.python_reads but neither) is refused by name.

import { fromMetadata as codepointScheme } from './codepoints.mjs';

const METADATA_PROPS = 14; // ModelProto.metadata_props: repeated StringStringEntryProto
const decoder = new TextDecoder('utf-8', { fatal: false });

function readVarint(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= bytes.length) throw new Error('truncated varint');
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
}

/** Iterate over [field, wireType, start, end] of one protobuf message; end is exclusive. */
function* fields(bytes, start = 0, end = bytes.length) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = readVarint(bytes, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    let from = pos;
    if (wire === 0) [, pos] = readVarint(bytes, pos);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let length;
      [length, from] = readVarint(bytes, pos);
      pos = from + length;
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
    if (pos > end) throw new Error('truncated protobuf field');
    yield [field, wire, from, pos];
  }
}

/**
 * The metadata_props of an ONNX model as a plain object.
 * @param {Uint8Array} bytes the .onnx file
 * @param {string} where the file's name, for errors
 * @returns {Record<string, string>}
 */
export function readMetadata(bytes, where) {
  const meta = {};
  try {
    for (const [field, wire, from, to] of fields(bytes)) {
      if (field !== METADATA_PROPS || wire !== 2) continue;
      let key = '';
      let value = '';
      for (const [f, w, a, b] of fields(bytes, from, to)) {
        if (w !== 2) continue;
        if (f === 1) key = decoder.decode(bytes.subarray(a, b));
        if (f === 2) value = decoder.decode(bytes.subarray(a, b));
      }
      meta[key] = value;
    }
  } catch (e) {
    throw new Error(`${where}: not an ONNX model (${e.message})`);
  }
  return meta;
}

function pyRepr(value) {
  return value === undefined ? 'None' : `'${value}'`;
}

function jsonField(meta, key, where) {
  try {
    if (!(key in meta)) throw new Error('missing');
    return JSON.parse(meta[key]);
  } catch {
    throw new Error(`${where}: metadata field '${key}' is missing or not JSON`);
  }
}

function sameJson(a, b) {
  const keys = Object.keys(a).sort();
  return JSON.stringify(keys) === JSON.stringify(Object.keys(b).sort())
    && keys.every((k) => a[k] === b[k]);
}

/**
 * Check a model's metadata against the contract (web/contract.json) and read what the
 * embedder needs. Throws an Error naming `where` for a file of another format, an unknown
 * format version, bad options or another char-id scheme.
 * @param {Record<string, string>} meta
 * @param {object} contract the parsed web/contract.json
 * @param {string} where
 * @returns {{options: object, nLayers: number, dim: number, maxChars: number,
 *            quantization: object, producer: string, source: object, charScheme: string,
 *            vocabulary: import('./codepoints.mjs').CodepointScheme|null, hasWords: boolean}}
 *   vocabulary: the learned vocabularies of a code-point model (version 3), else null
 */
export function checkMetadata(meta, contract, where) {
  const k = contract.keys;
  const fmt = meta[k.format];
  if (fmt !== contract.format) {
    throw new Error(`${where}: not an elmo-edge model (metadata '${k.format}' is ${pyRepr(fmt)}, `
      + `expected '${contract.format}'); convert ELMo weights with \`elmo convert\``);
  }
  const version = meta[k.format_version];
  const readable = readableVersions(contract).map(String);
  const reads = `elmo.mjs reads version${readable.length > 1 ? 's' : ''} ${readable.join(' and ')}`;
  if (!readable.includes(version) && contract.python_reads.map(String).includes(version)) {
    throw new Error(`${where}: elmo-edge model format version ${pyRepr(version)} is read by the `
      + `Python runtime but not by elmo.mjs (${reads}); use a model exported with those`);
  }
  if (!readable.includes(version)) {
    const older = version !== undefined && /^[0-9]+$/.test(version)
      && Number(version) < contract.format_version;
    const advice = older ? 're-export it with this elmo-edge (`elmo export` / `elmo convert`)'
      : 'upgrade elmo-edge';
    throw new Error(`${where}: elmo-edge model format version ${pyRepr(version)} is not supported `
      + `(${reads}); ${advice}`);
  }
  const options = jsonField(meta, k.options, where);
  const lstm = options?.lstm ?? {};
  const cnn = options?.char_cnn ?? {};
  const ints = [lstm.n_layers, lstm.projection_dim, cnn.max_characters_per_token];
  if (!ints.every((v) => Number.isInteger(v) && v > 0)) {
    throw new Error(`${where}: embedded options are invalid: lstm.n_layers, lstm.projection_dim `
      + 'and char_cnn.max_characters_per_token must be positive integers');
  }
  const maxChars = cnn.max_characters_per_token;
  let scheme = jsonField(meta, k.char_ids, where);
  const vocabulary = codepointVocabulary(scheme, options, version, contract, where);
  if (vocabulary !== null) {
    return {
      ...common(meta, k, where, options, lstm, maxChars),
      charScheme: contract.codepoint_char_ids.scheme,
      vocabulary,
      hasWords: vocabulary.hasWords,
    };
  }
  if (scheme && typeof scheme === 'object' && !Array.isArray(scheme)) {
    scheme = { scheme: contract.char_ids.scheme, ...scheme };
  }
  const wanted = { ...contract.char_ids, max_chars: maxChars };
  if (!scheme || typeof scheme !== 'object' || !sameJson(scheme, wanted)) {
    throw new Error(`${where}: model uses char ids ${JSON.stringify(scheme)}, `
      + `this runtime produces ${JSON.stringify(wanted)}`);
  }
  return {
    ...common(meta, k, where, options, lstm, maxChars),
    charScheme: contract.char_ids.scheme,
    vocabulary: null,
    hasWords: false,
  };
}

/** The format versions elmo.mjs reads: bilm-tf bytes, and code-point vocabularies. */
function readableVersions(contract) {
  const versions = [contract.format_version];
  if (contract.codepoint_format_version !== undefined) versions.push(contract.codepoint_format_version);
  return versions;
}

function common(meta, k, where, options, lstm, maxChars) {
  return {
    options,
    nLayers: lstm.n_layers + 1,
    dim: 2 * lstm.projection_dim,
    maxChars,
    quantization: k.quantization in meta ? jsonField(meta, k.quantization, where) : { mode: 'none' },
    producer: meta[k.producer_version] ?? 'unknown',
    source: k.source in meta ? jsonField(meta, k.source, where) : {},
  };
}

/**
 * The code-point vocabularies of a version-3 model, checked against its options
 * (contract.py's _vocabulary); null for a bilm-tf byte model.
 */
function codepointVocabulary(scheme, options, version, contract, where) {
  const named = scheme && typeof scheme === 'object' && !Array.isArray(scheme)
    ? scheme.scheme : undefined;
  const vocabulary = options.char_cnn?.vocabulary ?? 'bytes';
  const codepoint = vocabulary === 'codepoint';
  const cp = contract.codepoint_char_ids?.scheme;
  if (codepoint !== (cp !== undefined && named === cp)
      || codepoint !== (version === String(contract.codepoint_format_version))) {
    throw new Error(`${where}: format version ${version ?? 'None'}, char-id scheme `
      + `${pyRepr(named)} and options char_cnn.vocabulary ${pyRepr(vocabulary)} disagree`);
  }
  if (!codepoint) return null;
  return codepointScheme(scheme, where, {
    nCharacters: options.char_cnn?.n_characters,
    maxChars: options.char_cnn?.max_characters_per_token,
    nWords: options.word_embedding?.n_words ?? 0,
  });
}
