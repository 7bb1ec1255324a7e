// Tokens -> ids for models with a learned code-point vocabulary (ELMoForManyLangs conversions,
// elmo-edge format version 3), as elmo_runtime/format/codepoints.py does it:
// * a token is put in NFC (contract.json text.normal_form; see codepoints.py for why) and one
//   longer than maxChars - 2 code points is cut to that many (the word lookup too);
// * its row is [chars['<eow>'], c0, c1, ..., chars['<bow>'], <pad>, ...] (the markers are
//   swapped on purpose: their code does so in training and inference); a character not in
//   the vocabulary is <oov>;
// * the boundaries (and the literal tokens '<bos>' / '<eos>') are
//   [chars['<eow>'], chars['<bos>' or '<eos>'], chars['<bow>'], <pad>, ...];
// * +1 on every char id (0 = no token); word ids are an exact, case-sensitive lookup with
//   <oov> as the fallback, not shifted.
// JS strings are UTF-16: tokens are cut and walked by code point, never by code unit.

import contract from '../contract.json' with { type: 'json' };
import { indexTokens, NORMAL_FORM } from './chars.mjs';

const facts = contract.codepoint_char_ids; // format/codepoints.py
export const { scheme: SCHEME_NAME, id_shift: ID_SHIFT } = facts;
export const { bos: BOS, eos: EOS } = facts.specials;
const { oov: OOV, pad: PAD, bow: BOW, eow: EOW } = facts.specials;
export const { char_specials: CHAR_SPECIALS, word_specials: WORD_SPECIALS } = facts;

/**
 * The token as it is looked up: in NFC, at most maxChars - 2 code points.
 * @param {string} token
 * @param {number} maxChars
 */
export function cut(token, maxChars) {
  token = token.normalize(NORMAL_FORM);
  // token.length (code units) >= code points: shorter strings need no look
  if (token.length + 2 <= maxChars) return token;
  const points = Array.from(token);
  return points.length + 2 > maxChars ? points.slice(0, maxChars - 2).join('') : token;
}

function isVocab(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    && Object.values(value).every((v) => Number.isInteger(v) && v >= 0);
}

/** A model's vocabularies (chars, words or null) and its row width. */
export class CodepointScheme {
  /**
   * @param {Record<string, number>} chars
   * @param {number} maxChars
   * @param {Record<string, number>|null} [words]
   * Throws an Error (no model name; see fromMetadata) when a vocabulary lacks an entry.
   */
  constructor(chars, maxChars, words = null) {
    const has = (vocab, key) => Object.prototype.hasOwnProperty.call(vocab, key);
    let missing = CHAR_SPECIALS.filter((s) => !has(chars, s));
    if (missing.length) throw new Error(`char vocabulary lacks ${missing.join(', ')}`);
    if (words !== null) {
      missing = WORD_SPECIALS.filter((s) => !has(words, s));
      if (missing.length) throw new Error(`word vocabulary lacks ${missing.join(', ')}`);
    }
    if (!(maxChars >= 3)) {
      throw new Error(`max_characters_per_token must be at least 3, found ${maxChars}`);
    }
    this.chars = new Map(Object.entries(chars));
    this.words = words === null ? null : new Map(Object.entries(words));
    this.maxChars = maxChars;
    this.hasWords = words !== null;
  }

  /** Write the shifted char ids of one (uncut) token into `out` (length maxChars). */
  charRowInto(token, out) {
    const ch = this.chars;
    const piece = cut(token, this.maxChars);
    out.fill(ch.get(PAD) + ID_SHIFT);
    out[0] = ch.get(EOW) + ID_SHIFT;
    let i = 1;
    if (piece === BOS || piece === EOS) {
      out[i++] = ch.get(piece) + ID_SHIFT;
    } else {
      const oov = ch.get(OOV);
      for (const c of piece) out[i++] = (ch.get(c) ?? oov) + ID_SHIFT;
    }
    out[i] = ch.get(BOW) + ID_SHIFT;
  }

  /** Shifted char ids of `tokens`: row-major Int32Array (tokens.length x maxChars). */
  charIds(tokens) {
    const c = this.maxChars;
    const ids = new Int32Array(tokens.length * c);
    tokens.forEach((t, i) => this.charRowInto(t, ids.subarray(i * c, (i + 1) * c)));
    return ids;
  }

  /** Word ids of `tokens` (cut first, <oov> fallback): Int32Array. */
  wordIds(tokens) {
    if (this.words === null) throw new Error('this model has no word-embedding branch');
    const oov = this.words.get(OOV);
    return Int32Array.from(tokens, (t) => this.words.get(cut(t, this.maxChars)) ?? oov);
  }
}

/**
 * Rebuild the scheme from a model's metadata (codepoints.py from_metadata, same checks).
 * @param {unknown} meta the parsed elmo_edge.char_ids value
 * @param {string} where the model's name, for errors
 * @param {{nCharacters?: number, maxChars?: number, nWords?: number}} [fits] the options
 * @returns {CodepointScheme}
 */
export function fromMetadata(meta, where, { nCharacters, maxChars, nWords } = {}) {
  if (!meta || typeof meta !== 'object' || meta.scheme !== SCHEME_NAME) {
    throw new Error(`${where}: char-id scheme is not '${SCHEME_NAME}'`);
  }
  if (meta.id_shift !== ID_SHIFT) {
    const shift = meta.id_shift === undefined || meta.id_shift === null ? 'None'
      : JSON.stringify(meta.id_shift);
    throw new Error(`${where}: char-id shift ${shift}, `
      + `expected ${ID_SHIFT}`);
  }
  for (const key of ['chars', 'words']) {
    if (key === 'words' && (meta.words === undefined || meta.words === null)) continue;
    if (!isVocab(meta[key])) {
      throw new Error(`${where}: metadata ${key} vocabulary is not a {entry: id} object`);
    }
  }
  if (!Number.isInteger(meta.max_chars)) throw new Error(`${where}: metadata max_chars is missing`);
  let scheme;
  try {
    scheme = new CodepointScheme(meta.chars, meta.max_chars, meta.words ?? null);
  } catch (e) {
    throw new Error(`${where}: ${e.message}`);
  }
  const problems = [];
  if (nCharacters !== undefined && scheme.chars.size + 1 !== nCharacters) {
    problems.push(`${scheme.chars.size} chars for n_characters ${nCharacters}`);
  }
  if (maxChars !== undefined && scheme.maxChars !== maxChars) {
    problems.push(`max_chars ${scheme.maxChars} vs ${maxChars}`);
  }
  const words = scheme.words === null ? 0 : scheme.words.size;
  if (nWords !== undefined && words !== nWords) {
    problems.push(`${words} words for word_embedding.n_words ${nWords}`);
  }
  if (problems.length) {
    throw new Error(`${where}: vocabularies do not fit the options: ${problems.join('; ')}`);
  }
  return scheme;
}

/**
 * The graph's token inputs for a code-point model (chars.pack with a scheme in Python):
 * rows 0 and 1 are <bos> and <eos> (a literal '<bos>' / '<eos>' token points at them), then
 * each distinct token in order of first use; wordIds (one per row) when the model has words.
 * @param {string[][]} sentences
 * @param {CodepointScheme} scheme
 */
export function packCodepoints(sentences, scheme) {
  const { tokens, ...steps } = indexTokens(sentences, BOS, EOS);
  const rowTokens = [BOS, EOS, ...tokens];
  return {
    tokenChars: scheme.charIds(rowTokens),
    rows: rowTokens.length,
    wordIds: scheme.hasWords ? scheme.wordIds(rowTokens) : null,
    ...steps,
  };
}
