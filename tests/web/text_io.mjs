// Called by tests/web/test_text.py: reads {"texts": [...], "sentences": [[...]], "max_chars": C}
// as JSON on stdin and prints the JavaScript tokenizer's and packer's results as JSON.
import { readFileSync } from 'node:fs';
import { pack, tokenize } from '../../web/elmo.mjs';

const input = JSON.parse(readFileSync(0, 'utf-8'));
const packed = pack(input.sentences, input.max_chars);
process.stdout.write(JSON.stringify({
  tokens: input.texts.map(tokenize),
  token_chars: Array.from(packed.tokenChars),
  rows: packed.rows,
  token_index: Array.from(packed.tokenIndex),
  shape: [packed.batch, packed.steps],
}));
