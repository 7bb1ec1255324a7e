"""The same vectors on every CPU: run the bundled models here, compare runs from other CPUs.

    python bench/cross_cpu.py run OUT.npz [--fp32 M.onnx] [--int8 M.int8.onnx] [--label NAME]
                                          [--alone] [--only fp32|int8]
    python bench/cross_cpu.py compare A.npz B.npz ... [--expect-saturated LABEL ...]
    python bench/cross_cpu.py eight-bit OUT.int8.onnx    # a wrong model the step must catch

``run`` embeds :data:`SENTENCES` (fixed, varied: short and long, digits,
punctuation, accents, a 64-token run-on) with the fp32 and int8 models (the
bundled ones by default), in batches of :data:`BATCH` bucketed by length as
``Embedder.embed_sentences`` does (and, with ``--alone``,
each sentence alone: twice the work, so only the native run does it), 2
intra-op threads, token cache off, and writes every array plus what the
process saw: NumPy's view of the CPU (CPUID on x86, HWCAP on ARM, so under
``qemu-user`` the emulated CPU), onnxruntime's version and the **canary**, one
``MatMulInteger`` of 255 (u8) × 127 (s8) over K = 64. An exact int8 kernel
gives 64 · 255 · 127 = 2,072,640; AVX2 without VNNI runs u8×s8 on
``vpmaddubsw``, which adds each pair of products into a saturating int16
(255 · 127 · 2 = 64,770 > 32,767), and gives 32 · 32,767 = 1,048,544. The
canary tells which kind of kernel ran; the bundled int8 model's 7-bit weights
(|w| ≤ 63, :mod:`elmo_runtime.quantize.int8`) keep every pair below 2¹⁵, so
its vectors do not depend on it.

``compare`` requires every array of every run to be **bit-identical** to the
first run's (tolerance 0), the same model files (sha256) and onnxruntime
version, and each sentence alone (where a run has them) equal to it in the
batch; ``--expect-saturated
LABEL`` requires that run's canary to show the saturating kernel (proof that
the AVX2 path ran) and ``--expect-exact LABEL`` the exact one. Exit 1 on any
difference, with one line per difference (run, model, sentence, max |diff|).

``eight-bit`` writes the bundled fp32 model quantized as ``elmo quantize``
does but with 8-bit weights (|w| ≤ 127): on AVX2 without VNNI its products
saturate where other kernels are exact, and ``.ci/cross_cpu.sh --int8 OUT
--expect-fail`` shows that the step catches it.

Needs only NumPy, onnxruntime and ``elmo_runtime`` (no torch): it also runs
inside an arm64 root under ``qemu-aarch64`` (``.ci/cross_cpu.sh``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SENTENCES = [
    "The cat sat on the mat .",
    "Hi",
    "I went to the bank to deposit my paycheck .",
    "We sat on the bank of the river and watched the boats .",
    "In 1997 , the company reported revenues of $ 3.2 billion , up 14 % from 1996 .",
    "Don't stop believing ; hold on to that feeling !",
    "Crème brûlée , naïve café owners and the Zürich–Genève train .",
    "Who 's afraid of Virginia Woolf ?",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "A A A A A A A A A A A A",
    "e-mail me at someone@example.com or call +1 ( 555 ) 010-9999 .",
    "The quick brown fox jumps over the lazy dog while the dog sleeps .",
    "They said : \" It is what it is , \" and left .",
    "Colorless green ideas sleep furiously .",
    "Time flies like an arrow ; fruit flies like a banana .",
    "1 2 3 4 5 6 7 8 9 10",
    "Buffalo buffalo Buffalo buffalo buffalo buffalo Buffalo buffalo .",
    "東京 is the capital of Japan , and Москва of Russia .",
    "She sells sea shells by the sea shore , and the shells she sells are sea shells .",
    " ".join(["and then the long sentence went on and on , clause after clause , without end"] * 4),
]
CANARY_K = 64
CANARY_EXACT = CANARY_K * 255 * 127  # 2,072,640
CANARY_SATURATED = CANARY_K // 2 * 32767  # 1,048,544
THREADS = 2
BATCH = 8  # the runtime buckets the sentences by length into batches of up to 8


def canary() -> int:
    """The one value of a 1 × 64 × 1 ``MatMulInteger`` of 255 (u8) by 127 (s8)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((CANARY_K, 1), 127, np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "canary",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, CANARY_K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"a": np.full((1, CANARY_K), 255, np.uint8)})
    return int(y[0, 0])


def kernel_kind(value: int) -> str:
    """What the canary's value says about the u8×s8 kernel."""
    return {CANARY_EXACT: "exact", CANARY_SATURATED: "saturated"}.get(value, f"unknown {value}")


def cpu_seen() -> list[str]:
    """The SIMD features NumPy detected in this process (what the kernels see)."""
    from numpy._core._multiarray_umath import __cpu_features__

    return sorted(name for name, on in __cpu_features__.items() if on)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(out: Path, models: dict[str, Path], label: str, alone: bool) -> None:
    """Embed :data:`SENTENCES` with ``models`` ({"fp32": path, "int8": path} or one of them);
    write the arrays and the facts to ``out``."""
    import onnxruntime as ort
    from elmo_runtime import Embedder

    sentences = [s.split() for s in SENTENCES]
    arrays: dict[str, np.ndarray] = {}
    seconds = {}
    for name, path in models.items():
        start = time.perf_counter()
        emb = Embedder(path, provider="cpu", threads=THREADS, token_cache_mb=0)
        for i, vectors in enumerate(emb.embed_sentences(sentences, batch_size=BATCH)):
            arrays[f"{name}/batch/{i}"] = vectors
        for i, sentence in enumerate(sentences if alone else []):
            arrays[f"{name}/alone/{i}"] = emb.embed_sentence(sentence)
        seconds[name] = round(time.perf_counter() - start, 1)
    value = canary()
    facts = {"label": label, "machine": platform.machine(), "cpu_features": cpu_seen(),
             "onnxruntime": ort.__version__, "numpy": np.__version__,
             "canary": value, "kernel": kernel_kind(value), "seconds": seconds,
             "models": {name: sha256(path) for name, path in models.items()}}
    np.savez(out, facts=np.array(json.dumps(facts)), **arrays)
    took = ", ".join(f"{name} {t} s" for name, t in seconds.items())
    print(f"{label}: {platform.machine()}, u8×s8 kernel {facts['kernel']} (canary {value}), "
          f"{took}; CPU as seen: {' '.join(facts['cpu_features'])}")


def eight_bit(out: Path) -> None:
    """The bundled fp32 model quantized with 8-bit weights instead of 7-bit (a wrong model)."""
    from elmo_runtime import models
    from elmo_runtime.quantize import int8, quantize_model

    seven = int8.WEIGHT_MAX
    int8.WEIGHT_MAX = 127
    try:
        quantize_model(models.get("default").path, out, mode="int8", check=False)
    finally:
        int8.WEIGHT_MAX = seven
    print(f"{out}: the bundled model's int8 variant with 8-bit weights (|w| <= 127)")


def load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "facts"}
        return json.loads(str(data["facts"])), arrays


def compare(paths: list[Path], saturated: list[str], exact: list[str]) -> list[str]:
    """Every difference between the runs (empty: all bit-identical and canaries as expected)."""
    runs = [load(p) for p in paths]
    problems = []
    ref_facts, ref = runs[0]
    for facts, arrays in runs:
        who = facts["label"]
        for side in facts["models"]:  # batch independence within the run, exactly
            for key in (k for k in arrays if k.startswith(f"{side}/alone/")):
                batched = arrays[key.replace("/alone/", "/batch/")]
                if not np.array_equal(arrays[key], batched):
                    problems.append(f"{who}: {key} differs from the same sentence in the batch "
                                    f"by up to {_max_diff(arrays[key], batched):.3g}")
        if facts["label"] in saturated and facts["kernel"] != "saturated":
            problems.append(f"{who}: expected the saturating AVX2 kernel (canary "
                            f"{CANARY_SATURATED}), found {facts['kernel']} ({facts['canary']})")
        if facts["label"] in exact and facts["kernel"] != "exact":
            problems.append(f"{who}: expected an exact int8 kernel (canary {CANARY_EXACT}), "
                            f"found {facts['kernel']} ({facts['canary']})")
        if facts is ref_facts:
            continue
        for what in ("models", "onnxruntime"):
            if facts[what] != ref_facts[what]:
                problems.append(f"{who}: {what} {facts[what]} != {ref_facts['label']}'s "
                                f"{ref_facts[what]}")
        batched = {k for k in (*arrays, *ref) if "/batch/" in k}
        if missing := sorted(batched - (set(arrays) & set(ref))):
            problems.append(f"{who}: arrays {missing[:4]} are not in both runs")
        for key in sorted(batched & set(arrays) & set(ref)):
            a, b = arrays[key], ref[key]
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"{who}: {key} is {a.dtype}{a.shape}, "
                                f"{ref_facts['label']} has {b.dtype}{b.shape}")
            elif not np.array_equal(a, b):
                sentence = SENTENCES[int(key.rsplit("/", 1)[1])][:40]
                problems.append(f"{who}: {key} differs from {ref_facts['label']} by up to "
                                f"{_max_diff(a, b):.3g} ({sentence!r})")
    return problems


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="embed the fixed sentences here")
    r.add_argument("out", type=Path)
    r.add_argument("--fp32", type=Path, help="fp32 model (default: the bundled one)")
    r.add_argument("--int8", type=Path, help="int8 model (default: the bundled one)")
    r.add_argument("--label", default=platform.machine())
    r.add_argument("--alone", action="store_true", help="also embed each sentence alone")
    r.add_argument("--only", choices=("fp32", "int8"), help="run one of the two models")
    c = sub.add_parser("compare", help="require bit-identical arrays across runs")
    c.add_argument("runs", type=Path, nargs="+")
    c.add_argument("--expect-saturated", action="append", default=[], metavar="LABEL")
    c.add_argument("--expect-exact", action="append", default=[], metavar="LABEL")
    e = sub.add_parser("eight-bit", help="write the int8 model with 8-bit weights (wrong)")
    e.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.command == "eight-bit":
        eight_bit(args.out)
        return
    if args.command == "run":
        from elmo_runtime import models

        chosen = {"fp32": Path(args.fp32 or models.get("default").path),
                  "int8": Path(args.int8 or models.get("default-int8").path)}
        if args.only:
            chosen = {args.only: chosen[args.only]}
        run(args.out, chosen, args.label, args.alone)
        return
    problems = compare(args.runs, args.expect_saturated, args.expect_exact)
    for line in problems:
        print(f"cross-cpu: {line}", file=sys.stderr)
    labels = ", ".join(load(p)[0]["label"] for p in args.runs)
    if problems:
        sys.exit(f"cross-cpu: {len(problems)} difference(s) between {labels}")
    models = " and ".join(load(args.runs[0])[0]["models"])
    print(f"cross-cpu: {labels}: every array bit-identical ({models}, "
          f"{len(SENTENCES)} sentences in batches of {BATCH}; alone = batched where run)")


if __name__ == "__main__":
    main()
