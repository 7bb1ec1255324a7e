"""The browser code refuses what the Python runtime refuses, with the same words: mix values
(web/src/mix.mjs vs elmo_runtime.mix) and sentence lengths (web/src/chars.mjs vs the
embedder), fed the same values in Node."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from elmo_runtime.corpus import MAX_TOKENS
from elmo_runtime.embedder import check_sentence
from elmo_runtime.errors import ElmoError
from elmo_runtime.settings import MixSpec
from support.web import REPO, run_node

SCRIPT = REPO / "tests" / "web" / "refusals_io.mjs"
F32_MAX = float(np.finfo(np.float32).max)
LAYERS = {"data": [float(v) for v in range(1, 13)], "dims": [3, 2, 2]}  # (L+1, n, dim)
BIG = {"data": [1e30, -2e30, 3.0, 4.0] * 3, "dims": [3, 2, 2]}

MIXES: list[dict[str, Any]] = [
    {"weights": [-9e10, 1, -9e10], "gamma": 1},  # AllenNLP's pick-one-layer: accepted
    {"weights": [-1.7e308, 1.7e308, 0], "gamma": 1},
    {"weights": [0, 0, 0], "gamma": 1e39},
    {"weights": [0, 0, 0], "gamma": -1e39},
    {"weights": [0, 0, 0], "gamma": F32_MAX},
    {"weights": [0, 0, 0], "gamma": 1e308},
    {"weights": [1e308, 1e308, 1e308], "gamma": 1e308},
    {"weights": [0, 0, 0], "gamma": 3.5e38},
    {"weights": [0, math.inf, 0], "gamma": 1},
    {"weights": [0, 0, -math.inf], "gamma": 1},
    {"weights": [0, math.nan, 0], "gamma": 1},
    {"weights": [0, 0, 0], "gamma": math.nan},
    {"weights": [0, 0, 0], "gamma": math.inf},
    {"weights": [0, "1", 0], "gamma": 1},
    {"weights": [0, None, 0], "gamma": 1},
    {"weights": [0, [1, 2.5, "x"], 0], "gamma": 1},
    {"weights": [0, {"a": [True, None]}, 0], "gamma": 1},
    {"weights": [0, "it's", 0], "gamma": 1},
    {"weights": [0, False, 0], "gamma": 1},
    {"weights": [0, 0, 0], "gamma": "2"},
    {"weights": 5, "gamma": 1},
    {"weights": [], "gamma": 1},
    {"weights": [0, 0], "gamma": 1},
    {"weights": [0, 0, 0, 0], "gamma": 1e39},
    {"weights": [1e-320, 5e-324, 0.1], "gamma": 1e-300},
    {"weights": [0, 0, 0], "gamma": 1, "do_layer_norm": "yes"},
    {"weights": [0, 0, 0], "gamma": 1, "do_layer_norm": 1},
    {"weights": [0, 0], "gamma": 1, "do_layer_norm": None},
    {"weights": [0, 0, 0], "gamma": 1, "do_layer_norm": True},
]
MIXES_ON_LAYERS = [  # gamma within the bound, vectors that would not be
    ({"weights": [0, 0, 0], "gamma": 1e38}, LAYERS),
    ({"weights": [0, 0, 0], "gamma": 1e9}, BIG),
    ({"weights": [0, 0, 0], "gamma": 1e8}, BIG),
    ({"weights": [0, 0, 0], "gamma": -3e8, "do_layer_norm": True}, LAYERS),
    ({"weights": [0, 0, 0], "gamma": 1.5}, LAYERS),
]
SENTENCE_LENGTHS = [0, 1, MAX_TOKENS - 1, MAX_TOKENS, MAX_TOKENS + 1, 3 * MAX_TOKENS]


def _wire(value: Any) -> Any:
    """``value`` with the floats JSON cannot write as {"float": ...} (refusals_io.mjs)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _python(fn: Any) -> str | None:
    try:
        fn()
    except ElmoError as e:
        return str(e)
    return None


def _python_mix(mix: dict[str, Any], layers: dict[str, Any] | None) -> str | None:
    def run() -> None:
        resolved = MixSpec.of(mix).build(3)
        if layers is not None:
            resolved(np.asarray(layers["data"], dtype=np.float32).reshape(layers["dims"]))
    return _python(run)


def test_mix_values_and_sentence_lengths_are_refused_alike() -> None:
    cases = [(m, None) for m in MIXES] + MIXES_ON_LAYERS
    payload = {
        "mixes": [{"mix": m, "n_layers": 3, **({"layers": x} if x else {})} for m, x in cases],
        "sentences": [{"length": n, "index": 4} for n in SENTENCE_LENGTHS],
    }
    js = json.loads(run_node(SCRIPT, json.dumps(_wire(payload), allow_nan=False)))
    python = [_python_mix(m, x) for m, x in cases]
    assert js["mixes"] == python
    lengths = [_python(lambda n=n: check_sentence(["a"] * n, 4)) for n in SENTENCE_LENGTHS]
    assert js["sentences"] == lengths
    # the cases really cover both sides of each bound
    assert python[0] is None and python[1] is None and python[4] is None
    assert python[2] == ("gamma must be within ±3.4028234663852886e+38 (the largest float32; "
                         "the vectors are float32), found 1e+39")
    assert "overflow float32" in python[len(MIXES)] and python[-1] is None
    assert lengths[:4] == [None] * 4
    assert lengths[4] == (f"sentence 4: {MAX_TOKENS + 1} tokens, more than {MAX_TOKENS} (the "
                          "most a sentence may have: memory grows with it); split it")
