"""Time AllenNLP 2.10.1's ``_ElmoBiLm``: run by ``bench/run.py`` with the AllenNLP venv's python.

    VENV/bin/python bench/allennlp_worker.py SPEC.json

The venv (``bench/allennlp_venv.sh``) has torch and allennlp but not elmo-edge,
so the spec file carries everything: ``options`` and ``weights`` (the bench's
seeded weights written as a bilm-tf options.json + hdf5), ``sentences``
(token lists), ``batches`` (index lists from the runtime's own planner, or
one sentence each at batch 1), ``threads``. Each batch is one
``_ElmoBiLm`` call with its LSTM states reset first (stateless, as the ONNX
rows), then every layer cut per sentence with the boundaries removed.
Prints one JSON line: ``seconds`` in all, ``times`` per batch, and the
sentence-0 layers' sum (a check that the weights loaded are the bench's).
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import time
import types


def _stand_ins() -> None:
    """Empty torchvision modules: allennlp imports them, ELMo never uses them.

    PyPI's torchvision cannot load beside the CPU torch of the venv
    (ANCHOR_ALLENNLP.md); only when the real import fails.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in ("torchvision", "torchvision.ops", "torchvision.ops.boxes",
                     "torchvision.models", "torchvision.models.detection", "torchvision.io"):
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec reads it
            sys.modules[name] = module


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    _stand_ins()
    import torch
    from allennlp.modules.elmo import _ElmoBiLm, batch_to_ids
    from allennlp.nn.util import remove_sentence_boundaries

    torch.set_num_threads(spec["threads"])
    bilm = _ElmoBiLm(spec["options"], spec["weights"], requires_grad=False).eval()
    sentences = spec["sentences"]

    @torch.no_grad()
    def run(batch: list[list[str]]) -> list[list[torch.Tensor]]:
        bilm._elmo_lstm.reset_states()  # stateless: every batch starts from zero states
        out = bilm(batch_to_ids(batch))
        cut = [remove_sentence_boundaries(layer, out["mask"])[0] for layer in out["activations"]]
        return [[layer[j, : len(s)].clone() for layer in cut] for j, s in enumerate(batch)]

    first = run(sentences[:2])  # warm-up
    checksum = float(sum(layer.double().sum() for layer in first[0]))
    times = []
    for idx in spec["batches"]:
        start = time.perf_counter()
        run([sentences[i] for i in idx])
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": sum(times), "times": times, "checksum": checksum,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
