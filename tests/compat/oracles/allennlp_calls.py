"""Run a sequence of ElmoEmbedder calls and save every result (an oracle script).

    python allennlp_calls.py allennlp|elmo-edge SPEC.json OUT.npz

Runs with AllenNLP 0.9 in its own venv (``allennlp``: ``.ci/oracles.sh`` builds
``.venv-a09``) or with the drop-in (``elmo-edge``); the test compares the two files.
SPEC: ``{"options", "weights", "calls": [...]}``, each call one of
``{"sentence": [...]}``, ``{"batch": [[...], ...]}``, ``{"sentences": [...], "batch_size"}``,
``{"to_embeddings": [[...], ...]}``, ``{"file": [lines], "output_format", "batch_size",
"forget_sentences", "use_sentence_keys", "out": PATH}`` (writes hdf5 at PATH), all on one
embedder, in order. OUT holds ``c{i}`` (one array) or ``c{i}_{j}`` (the j-th of a list).
Only the standard library, NumPy and the embedder are imported.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np


def main(impl: str, spec_path: str, out_path: str) -> None:
    warnings.simplefilter("ignore")
    if impl == "allennlp":
        from allennlp.commands.elmo import ElmoEmbedder
    else:
        from elmo_runtime.compat.allennlp import ElmoEmbedder
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    embedder = ElmoEmbedder(spec["options"], spec["weights"], cuda_device=-1)
    results: dict[str, np.ndarray] = {}
    for i, call in enumerate(spec["calls"]):
        if "sentence" in call:
            results[f"c{i}"] = embedder.embed_sentence(call["sentence"])
        elif "batch" in call:
            for j, v in enumerate(embedder.embed_batch(call["batch"])):
                results[f"c{i}_{j}"] = v
        elif "sentences" in call:
            it = embedder.embed_sentences(call["sentences"], call["batch_size"])
            for j, v in enumerate(it):
                results[f"c{i}_{j}"] = v
        elif "to_embeddings" in call:
            activations, mask = embedder.batch_to_embeddings(call["to_embeddings"])
            results[f"c{i}_0"] = np.asarray(activations.detach().numpy()
                                            if hasattr(activations, "detach") else activations)
            results[f"c{i}_1"] = np.asarray(mask.numpy() if hasattr(mask, "numpy") else mask)
        else:
            with open(call["input"], encoding="utf-8") as lines:
                embedder.embed_file(lines, call["out"], call["output_format"],
                                    call["batch_size"], call["forget_sentences"],
                                    call["use_sentence_keys"])
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:4])
