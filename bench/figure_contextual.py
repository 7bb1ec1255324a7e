"""Figure: one word in many sentences, layer 0 vs the learned mix, and the mix's weights.

    python bench/supersense.py                 # writes bench/results/supersense.mix.json
    python bench/figure_contextual.py          # writes bench/results/contextual.png

For each word (default: bank, play, head) every WordNet example sentence
whose target is that lemma (``bench/supersense_items.py``) is embedded; the
target's vectors are projected to 2-D by PCA (NumPy SVD), one panel per word
and representation, colored by the example's supersense. Layer 0 is
context-free: every sentence's "bank" is the same point, so the senses cannot
separate; the learned mix (``--mix``) moves each occurrence by its context.
A bar chart shows the mix's softmax layer weights. Needs matplotlib (the
``dev`` extra).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from elmo_runtime import Embedder
from elmo_runtime.embedder import default_model_path
from elmo_runtime.mix import ScalarMix, load_mix
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from supersense_items import DEFAULT_WORDNET_DIR, Item, extract_items

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
OTHER = "lightgray"


def pca_2d(x: np.ndarray) -> np.ndarray:
    """``(n, 2)``: the projection of ``x`` on its two main principal axes."""
    centered = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    out = centered @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def project(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D points of ``vectors``, of the distinct ones (equal to 5 digits), and their counts.

    Deduplicating first keeps PCA from blowing float noise between equal
    vectors up into spread-out points.
    """
    key = np.round(vectors / (np.abs(vectors).max() + 1e-30), 5)
    _, first, inverse, counts = np.unique(key, axis=0, return_index=True, return_inverse=True,
                                          return_counts=True)
    distinct = pca_2d(vectors[first].astype(np.float64))
    return distinct[inverse.ravel()], distinct, counts


def word_vectors(embedder: Embedder, items: list[Item], mix: ScalarMix) -> tuple[np.ndarray, ...]:
    """Span means of layer 0 and of the mixed vectors, ``(n, D)`` each."""
    layer0, mixed = [], []
    for item, layers in zip(items, embedder.embed_sentences([it.tokens for it in items]),
                            strict=True):
        span = layers[:, item.start : item.end]
        layer0.append(span[0].mean(axis=0))
        mixed.append(mix(span).mean(axis=0))
    return np.array(layer0), np.array(mixed)


def plot_word(ax: Axes, vectors: np.ndarray, senses: list[str], title: str) -> None:
    points, distinct, counts = project(vectors)
    top = [s for s, _ in Counter(senses).most_common(len(COLORS))]
    groups = [(sense, [i for i, s in enumerate(senses) if s == sense]) for sense in top]
    groups.append(("other", [i for i, s in enumerate(senses) if s not in top]))
    for (label, idx), color in zip(groups, [*COLORS[: len(top)], OTHER], strict=True):
        if idx:
            ax.scatter(points[idx, 0], points[idx, 1], s=28, alpha=0.75, c=color, label=label,
                       edgecolors="black", linewidths=0.3)
    for (x, y), count in zip(distinct, counts, strict=True):
        if count > 1:  # sentences whose vectors coincide
            ax.annotate(f"×{count}", (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8)
    plural = "" if len(counts) == 1 else "s"
    ax.set_title(f"{title}\n{len(points)} sentences, {len(counts)} distinct vector{plural}",
                 fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="float32 .onnx (default: the bundled model)")
    ap.add_argument("--mix", type=Path, default=RESULTS / "supersense.mix.json",
                    help="the learned mix (written by bench/supersense.py)")
    ap.add_argument("--words", default="bank,play,head")
    ap.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET_DIR)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "contextual.png")
    args = ap.parse_args()

    embedder = Embedder(args.model or default_model_path(), provider="cpu", threads=args.threads)
    n_layers = embedder.info.options.n_output_layers
    mix = load_mix(args.mix, n_layers)
    words = [w.strip() for w in args.words.split(",") if w.strip()]
    items = extract_items(args.wordnet).items

    fig = Figure(figsize=(3.6 * len(words) + 3.2, 7.2), layout="constrained")
    grid = fig.add_gridspec(2, len(words) + 1, width_ratios=[1.0] * len(words) + [0.8])
    for col, word in enumerate(words):
        chosen = [it for it in items if it.lemma.casefold() == word.casefold()]
        if len(chosen) < 2:
            raise SystemExit(f"fewer than two WordNet examples have the target {word!r}")
        senses = [it.supersense for it in chosen]
        for row, (vectors, name) in enumerate(
            zip(word_vectors(embedder, chosen, mix), ("layer 0", "learned mix"), strict=True)
        ):
            ax = fig.add_subplot(grid[row, col])
            plot_word(ax, vectors, senses, f'"{word}": {name}')
            if row == 1:
                ax.legend(fontsize=7, loc="best", framealpha=0.8)
    ax = fig.add_subplot(grid[:, -1])
    weights = mix.normalized_weights()
    names = ["0: char CNN"] + [f"{j}: LSTM {j}" for j in range(1, n_layers)]
    ax.bar(names, weights, color="tab:gray")
    for j, w in enumerate(weights):
        ax.text(j, w, f"{w:.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"learned layer weights\nsoftmax(w), gamma = {mix.gamma:.3g}", fontsize=9)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    fig.suptitle("The same word in different WordNet sentences, colored by supersense "
                 "(PCA to 2-D)", fontsize=11)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
