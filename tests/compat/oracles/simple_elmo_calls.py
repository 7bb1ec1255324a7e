"""Run simple_elmo's two methods over every ``layers`` value and save the results.

    python simple_elmo_calls.py simple_elmo|elmo-edge MODEL TEXTS.json OUT.npz BATCH

With simple-elmo 0.9.2 in its own venv (``.ci/oracles.sh`` builds ``.venv-se``) or with
the drop-in: one ``load(MODEL, max_batch_size=BATCH)`` (one per process: simple_elmo builds
its graph in TensorFlow's default graph), then for each ``warmup`` and each ``layers``:
``v_{batch}_{warmup}_{layers}`` (get_elmo_vectors) and ``a_{batch}_{warmup}_{layers}``
(get_elmo_vector_average).
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np

os.environ["TF_USE_LEGACY_KERAS"] = "0"  # TF 2.15 refuses to start when it is 1
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(impl: str, model_path: str, texts_path: str, out_path: str, batch_size: str) -> None:
    if impl == "simple_elmo":
        from simple_elmo import ElmoModel
    else:
        from elmo_runtime.compat.simple_elmo import ElmoModel
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    out: dict[str, np.ndarray] = {}
    batch = int(batch_size)
    model = ElmoModel()
    logging.disable(logging.INFO)  # simple_elmo logs every batch
    model.load(model_path, max_batch_size=batch)
    for warmup in (False, True):
        for layers in ("average", "top", "all"):
            key = f"{batch}_{int(warmup)}_{layers}"
            out[f"v_{key}"] = model.get_elmo_vectors(texts, warmup=warmup, layers=layers)
            out[f"a_{key}"] = model.get_elmo_vector_average(texts, warmup=warmup,
                                                            layers=layers)
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:])
