// The runtime's tokenizer (elmo_runtime/tokenize.py), rule for rule, as a JavaScript RegExp.
//
// The text is put in Unicode NFC first (contract.json text.normal_form; the char-id packers
// do the same), and a word character is a letter or digit with the marks that follow it
// (\p{M}: accents, Indic vowel signs and viramas, variation selectors) and ZWJ/ZWNJ.
// Python's `re` and JavaScript differ in ways this pattern spells out by hand:
// Python's \w is [\p{L}\p{N}_] and its \d is \p{Nd} (Unicode), JavaScript's are ASCII;
// Python's \s adds U+001C..U+001F and U+0085 to JavaScript's and drops U+FEFF; Python's \b
// is Unicode-aware; and Python's case-insensitive `(?i:s)` also matches U+017F (long s).
// tests/web check this module against tokenize.py on thousands of strings.

import contract from '../contract.json' with { type: 'json' };

const WORD = '\\p{L}\\p{N}_'; // Python's \w
const MARK = '[\\p{M}\\u200c\\u200d]'; // tokenize.py mark_class(): marks, ZWNJ, ZWJ
const ALNUM = `(?:[\\p{L}\\p{N}]|${MARK})`; // a word character: [^\W_] or a mark
const LETTER = `[\\p{L}\\p{Nl}\\p{No}]${MARK}*`; // [^\W\d_] and its marks
const SPACE = '\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const END_OF_WORD = `(?![${WORD}\\p{M}\\u200c\\u200d])`; // no word character follows
const S = '[sS\\u017f]';
const CLITIC_BODY = `(?:${S}|[rR][eE]|[vV][eE]|[lL][lL]|[dD]|[mM])`;
const NT = `[nN]'[tT]${END_OF_WORD}`;

/** The token pattern of tokenize.py (flags: global, unicode). */
export const TOKEN_PATTERN = new RegExp(
  [
    `(?:${LETTER}\\.){2,}`, // abbreviation: U.S., e.g.
    `\\p{Nd}+(?:[.,:]\\p{Nd}+)*${ALNUM}*`, // number: 3.14, 1,000, 9:30, 1990s
    `${ALNUM}+(?=${NT})`, // the "do" of "don't"
    NT, // the "n't" of "don't"
    `'${CLITIC_BODY}${END_OF_WORD}`, // 's 're 've 'll 'd 'm
    `${ALNUM}+(?:-${ALNUM}+|'(?!(?:${CLITIC_BODY}|[tT])${END_OF_WORD})${ALNUM}+)*`, // word
    `((?:[^${WORD}${SPACE}]|_)${MARK}*)\\1*`, // punctuation: one run of one character
  ].join('|'),
  'gu',
);

/**
 * The tokens of `text` in NFC, as elmo_runtime.tokenize.tokenize gives them.
 * @param {string} text
 * @returns {string[]}
 */
export function tokenize(text) {
  const normal = String(text).normalize(contract.text.normal_form);
  return Array.from(normal.matchAll(TOKEN_PATTERN), (m) => m[0]);
}
