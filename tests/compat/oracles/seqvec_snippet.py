"""SeqVec's published usage (Rostlab/SeqVec README), unchanged but for the import.

    python seqvec_snippet.py allennlp|elmo-edge MODEL_DIR SEQS.json OUT.npz

The README's lines are between the markers; only the import differs between the two runs
(and ``.sum(0)`` is spelled on the array, where the README wraps it in ``torch.tensor``,
so that it runs without torch too). OUT: ``e{i}``, ``r{i}``, ``p{i}`` per sequence.
"""

import json
import sys
import warnings

import numpy as np

warnings.simplefilter("ignore")
if sys.argv[1] == "allennlp":
    from allennlp.commands.elmo import ElmoEmbedder
else:
    from elmo_runtime.compat.allennlp import ElmoEmbedder
from pathlib import Path  # noqa: E402

with open(sys.argv[3], encoding="utf-8") as f:
    sequences = json.load(f)
out = {}
# --- the README's snippet ---------------------------------------------------------------
model_dir = Path(sys.argv[2])
weights = model_dir / 'weights.hdf5'
options = model_dir / 'options.json'
embedder = ElmoEmbedder(options, weights, cuda_device=-1)  # cuda_device=-1 for CPU
for i, seq in enumerate(sequences):
    embedding = embedder.embed_sentence(list(seq))  # List-of-Lists with shape [3,L,1024]
    residue_embd = embedding.sum(0)  # shape [L,1024]
    protein_embd = embedding.sum(0).mean(0)  # Vector with shape [1024]
    # --- end of the snippet -------------------------------------------------------------
    out[f"e{i}"], out[f"r{i}"], out[f"p{i}"] = embedding, residue_embd, protein_embd
np.savez(sys.argv[4], **out)
