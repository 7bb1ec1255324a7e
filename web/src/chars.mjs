// Tokens -> bilm-tf character ids and the graph's token inputs, as elmo_runtime/format/chars.py
// does it (docs/elmo-spec.md, "Character ids"): each token in NFC, its UTF-8 bytes cut to
// max_chars - 2, [BOW, bytes..., EOW, PAD...], +1 on every id; <S> and </S> rows around every
// sentence; the literal tokens "<S>" and "</S>" are those boundary rows. The constants come
// from contract.json (generated from the Python package).

import contract from '../contract.json' with { type: 'json' };

/** The scheme constants (contract.json, from format/chars.py); `checkScheme` compares them with a
 * model's metadata. */
export const {
  bos_char: BOS_CHAR, eos_char: EOS_CHAR, bow_char: BOW_CHAR, eow_char: EOW_CHAR,
  pad_char: PAD_CHAR, id_shift: ID_SHIFT,
} = contract.char_ids;
export const {
  bos_token: BOS_TOKEN, eos_token: EOS_TOKEN, default_max_chars: DEFAULT_MAX_CHARS,
  boundary_rows: N_BOUNDARY_ROWS,
} = contract.char_rows;
/** The most tokens a sentence may have (format/bounds.py MAX_SENTENCE_TOKENS). */
export const MAX_SENTENCE_TOKENS = contract.bounds.max_sentence_tokens;
/** The Unicode form tokens are read in (NFC), by the tokenizer and both packers. */
export const NORMAL_FORM = contract.text.normal_form;

const encoder = new TextEncoder();

/**
 * Shifted ids of one boundary row (BOS_CHAR or EOS_CHAR).
 * @param {number} char
 * @param {number} maxChars
 * @returns {Int32Array} length maxChars
 */
export function boundaryRow(char, maxChars = DEFAULT_MAX_CHARS) {
  const row = new Int32Array(maxChars).fill(PAD_CHAR + ID_SHIFT);
  row[0] = BOW_CHAR + ID_SHIFT;
  row[1] = char + ID_SHIFT;
  row[2] = EOW_CHAR + ID_SHIFT;
  return row;
}

/**
 * Write the shifted ids of `token` into `out` (length maxChars).
 * @param {string} token
 * @param {Int32Array} out
 */
function encodeInto(token, out) {
  const maxChars = out.length;
  if (token === BOS_TOKEN || token === EOS_TOKEN) {
    out.set(boundaryRow(token === BOS_TOKEN ? BOS_CHAR : EOS_CHAR, maxChars));
    return;
  }
  const bytes = encoder.encode(token.normalize(NORMAL_FORM)).subarray(0, maxChars - 2);
  out.fill(PAD_CHAR + ID_SHIFT);
  out[0] = BOW_CHAR + ID_SHIFT;
  for (let i = 0; i < bytes.length; i++) out[i + 1] = bytes[i] + ID_SHIFT;
  out[bytes.length + 1] = EOW_CHAR + ID_SHIFT;
}

/**
 * Shifted char ids of `tokens` (no boundaries added): row-major Int32Array (tokens.length x maxChars).
 * @param {string[]} tokens
 * @param {number} maxChars
 * @returns {Int32Array}
 */
export function tokensToIds(tokens, maxChars = DEFAULT_MAX_CHARS) {
  const ids = new Int32Array(tokens.length * maxChars);
  tokens.forEach((t, i) => encodeInto(t, ids.subarray(i * maxChars, (i + 1) * maxChars)));
  return ids;
}

/**
 * Throw unless `sentence` is an array of at most MAX_SENTENCE_TOKENS non-empty strings (the
 * Python runtime's rule and words: embedder.check_sentence).
 * @param {unknown} sentence
 * @param {number} index
 */
export function checkSentence(sentence, index) {
  if (typeof sentence === 'string') {
    throw new TypeError(`sentence ${index}: expected a list of tokens, got a string; split it or use tokenize()`);
  }
  if (!Array.isArray(sentence)) {
    throw new TypeError(`sentence ${index}: expected a list of tokens, got ${typeof sentence}`);
  }
  if (sentence.length > MAX_SENTENCE_TOKENS) {
    throw new RangeError(`sentence ${index}: ${sentence.length} tokens, more than `
      + `${MAX_SENTENCE_TOKENS} (the most a sentence may have: memory grows with it); split it`);
  }
  sentence.forEach((token, j) => {
    if (typeof token !== 'string') {
      throw new TypeError(`sentence ${index}: token ${j} is a ${typeof token}, expected a string`);
    }
    if (!token) throw new TypeError(`sentence ${index}: token ${j} is an empty string`);
  });
}

/**
 * The graph's token inputs for tokenized sentences, boundaries added (chars.pack in Python).
 *
 * tokenChars: Int32Array (N x maxChars), rows 0 and 1 are <S> and </S>, then each distinct
 * token in order of first use. tokenIndex: Int32Array (B x T), T = longest sentence + 2,
 * the row used at each step, -1 past a sentence's </S>.
 * @param {string[][]} sentences
 * @param {number} maxChars
 * @returns {{tokenChars: Int32Array, rows: number, tokenIndex: Int32Array, batch: number,
 *            steps: number, lengths: number[]}}
 */
export function pack(sentences, maxChars = DEFAULT_MAX_CHARS) {
  const { tokens, ...steps } = indexTokens(sentences, BOS_TOKEN, EOS_TOKEN);
  const rows = N_BOUNDARY_ROWS + tokens.length;
  const tokenChars = new Int32Array(rows * maxChars);
  tokenChars.set(boundaryRow(BOS_CHAR, maxChars), 0);
  tokenChars.set(boundaryRow(EOS_CHAR, maxChars), maxChars);
  tokenChars.set(tokensToIds(tokens, maxChars), N_BOUNDARY_ROWS * maxChars);
  return { tokenChars, rows, ...steps };
}

/**
 * Which row each step reads, whatever the char-id scheme: rows 0 and 1 are the sentence
 * boundaries (a literal `bos` / `eos` token points at them too), then each distinct token
 * in order of first use (`tokens`). tokenIndex: Int32Array (batch x steps), -1 past a
 * sentence's end boundary; steps = longest sentence + 2.
 * @param {string[][]} sentences
 * @param {string} bos
 * @param {string} eos
 * @returns {{tokens: string[], tokenIndex: Int32Array, batch: number, steps: number,
 *            lengths: number[]}}
 */
export function indexTokens(sentences, bos, eos) {
  const codes = new Map([[bos, 0], [eos, 1]]);
  const tokens = [];
  const lengths = sentences.map((s) => s.length + 2);
  const batch = sentences.length;
  const steps = batch ? Math.max(...lengths) : 2;
  const tokenIndex = new Int32Array(batch * steps).fill(-1);
  sentences.forEach((sentence, b) => {
    const row = tokenIndex.subarray(b * steps, (b + 1) * steps);
    row[0] = 0;
    sentence.forEach((token, j) => {
      let code = codes.get(token);
      if (code === undefined) {
        code = N_BOUNDARY_ROWS + tokens.length;
        codes.set(token, code);
        tokens.push(token);
      }
      row[j + 1] = code;
    });
    row[sentence.length + 1] = 1;
  });
  return { tokens, tokenIndex, batch, steps, lengths };
}

/** The scheme as a model's metadata records it (chars.scheme() plus max_chars). */
export function scheme(maxChars) {
  return {
    bos_char: BOS_CHAR, eos_char: EOS_CHAR, bow_char: BOW_CHAR, eow_char: EOW_CHAR,
    pad_char: PAD_CHAR, id_shift: ID_SHIFT, max_chars: maxChars,
  };
}
