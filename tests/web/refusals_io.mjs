// Called by tests/web/test_refusals.py: reads {"mixes": [{"mix", "n_layers", "layers"?}],
// "sentences": [{"length", "index"}]} on stdin ({"float": "inf"|"-inf"|"nan"} stands for a
// number JSON cannot write) and prints, for each, the message web/src refuses it with, or null.
import { readFileSync } from 'node:fs';
import { checkSentence } from '../../web/src/chars.mjs';
import { applyMix, resolveMix } from '../../web/src/mix.mjs';

const special = { inf: Infinity, '-inf': -Infinity, nan: NaN };
const input = JSON.parse(readFileSync(0, 'utf-8'), (_key, value) => (
  value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).join() === 'float'
    ? special[value.float] : value));

function refusal(fn) {
  try {
    fn();
    return null;
  } catch (e) {
    return e.message;
  }
}

process.stdout.write(JSON.stringify({
  mixes: input.mixes.map(({ mix, n_layers: nLayers, layers }) => refusal(() => {
    const resolved = resolveMix(mix, nLayers);
    if (layers) applyMix(Float32Array.from(layers.data), layers.dims, resolved);
  })),
  sentences: input.sentences.map(({ length, index }) => refusal(
    () => checkSentence(new Array(length).fill('a'), index))),
}));
