// Called by tests/web/test_codepoints.py: reads {"vocabulary": <elmo_edge.char_ids JSON text>,
// "max_chars": C, "n_words": W, "sentences": [[...]]} on stdin and prints the JavaScript
// code-point packer's results (web/src/codepoints.mjs) as JSON.
import { readFileSync } from 'node:fs';
import { fromMetadata, packCodepoints } from '../../web/src/codepoints.mjs';

const input = JSON.parse(readFileSync(0, 'utf-8'));
const scheme = fromMetadata(JSON.parse(input.vocabulary), 'efml.onnx',
  { maxChars: input.max_chars, nWords: input.n_words });
const packed = packCodepoints(input.sentences, scheme);
process.stdout.write(JSON.stringify({
  token_chars: Array.from(packed.tokenChars),
  rows: packed.rows,
  token_index: Array.from(packed.tokenIndex),
  word_ids: packed.wordIds === null ? null : Array.from(packed.wordIds),
  shape: [packed.batch, packed.steps],
}));
