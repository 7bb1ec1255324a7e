#!/usr/bin/env bash
# The oracles of the drop-ins (docs/switching.md), each in its own git-ignored venv, from the
# recipes measured in ORACLES.md:
#   .venv-a09  AllenNLP 0.9.0's own ElmoEmbedder on torch 2.13 (installed --no-deps, then the
#              packages its import chain needs; spacy 2.3.9 is built against numpy 1.x)
#   .venv-se   simple-elmo 0.9.2 on tensorflow-cpu 2.15.1 (the last TF with Keras 2 built in)
# A venv that already imports its oracle is kept. Prints the time each install took.
# Then: python -m pytest -m oracle   (the tests find the venvs at the repository root, or at
# $ELMO_ORACLE_A09 / $ELMO_ORACLE_SE).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${ORACLE_PYTHON:-python3}
PIP_QUIET=(-q --disable-pip-version-check)

a09_ok() { .venv-a09/bin/python -W ignore -c 'from allennlp.commands.elmo import ElmoEmbedder' 2>/dev/null; }
se_ok() { TF_USE_LEGACY_KERAS=0 .venv-se/bin/python -c 'import simple_elmo' 2>/dev/null; }

if ! a09_ok; then
  start=$SECONDS
  rm -rf .venv-a09
  "$PY" -m venv .venv-a09
  pin=$(mktemp)
  echo "torch==2.13.0" > "$pin"
  .venv-a09/bin/pip install "${PIP_QUIET[@]}" torch==2.13.0
  .venv-a09/bin/pip install "${PIP_QUIET[@]}" --no-deps allennlp==0.9.0
  # exactly what `from allennlp.commands.elmo import ElmoEmbedder` imports (ORACLES.md §3)
  .venv-a09/bin/pip install "${PIP_QUIET[@]}" -c "$pin" "numpy<2" spacy==2.3.9 overrides==4.1.2 \
    flask flask-cors gevent boto3 numpydoc jsonpickle editdistance ftfy pytorch-pretrained-bert \
    nltk pytorch-transformers==1.1.0 parsimonious unidecode word2number conllu h5py \
    tensorboardX scipy scikit-learn sqlparse pytest
  rm -f "$pin"
  a09_ok || { echo "oracles: .venv-a09 cannot import allennlp.commands.elmo" >&2; exit 1; }
  echo "oracles: .venv-a09 (allennlp 0.9.0) installed in $((SECONDS - start)) s"
fi

if ! se_ok; then
  start=$SECONDS
  rm -rf .venv-se
  "$PY" -m venv .venv-se
  .venv-se/bin/pip install "${PIP_QUIET[@]}" simple-elmo==0.9.2 tensorflow-cpu==2.15.1
  se_ok || { echo "oracles: .venv-se cannot import simple_elmo" >&2; exit 1; }
  echo "oracles: .venv-se (simple-elmo 0.9.2, tensorflow-cpu 2.15.1) installed in $((SECONDS - start)) s"
fi
