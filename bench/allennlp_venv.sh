#!/usr/bin/env bash
# Make the AllenNLP 2.10.1 reference venv that `bench/run.py --allennlp VENV` times
# (the recipe of ANCHOR_ALLENNLP.md: allennlp without its pins beside CPU torch 2.13).
#   bash bench/allennlp_venv.sh [VENV]        # default .venv-allennlp (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-allennlp}"
python3.11 -m venv "$venv"
pip="$venv/bin/pip"
pin="$(mktemp)"; trap 'rm -f "$pin"' EXIT
echo "torch==2.13.0+cpu" > "$pin"       # keeps pip from replacing torch
"$pip" install -q "torch==2.13.0+cpu"
"$pip" install -q --no-deps allennlp==2.10.1
# pip prints "allennlp 2.10.1 requires torch<1.13 ..." here: expected, harmless.
"$pip" install -q -c "$pin" \
    numpy==2.4.6 h5py==3.16.0 spacy==3.8.18 transformers==4.57.6 huggingface-hub==0.36.2 \
    tokenizers==0.22.2 cached-path==1.8.10 lmdb==3.0.0 dill==0.4.1 base58==2.1.1 \
    more-itertools==11.2.1 termcolor==3.3.0 jsonnet==0.22.0 nltk==3.10.4 sentencepiece==0.2.3 \
    sacremoses==0.2.0 tensorboardX==2.6.5 scikit-learn==1.9.1 scipy==1.17.1 traitlets==5.16.1 \
    2>&1 | grep -v "requires torch<" || true
# an sdist: without build isolation, or pip fetches a torch to build it
"$pip" install -q --no-deps --no-build-isolation fairscale==0.4.6
# the check: AllenNLP's biLM imports (with the worker's torchvision stand-ins)
env -u PYTHONPATH "$venv/bin/python" -W ignore - <<'PY'
import sys
sys.path.insert(0, "bench")
import allennlp_worker
allennlp_worker._stand_ins()
import torch
from allennlp.modules.elmo import _ElmoBiLm  # noqa: F401
from allennlp.version import VERSION
print("allennlp", VERSION, "torch", torch.__version__)
PY
