"""Tokens → ids for models with a learned code-point vocabulary (ELMoForManyLangs).

HIT-SCIR's ELMoForManyLangs models (``elmo convert`` of such a model
directory) do not use bilm-tf's UTF-8 bytes. Their ids come from two
per-model vocabularies, reproduced here exactly as their package builds them
(``frontend.create_one_batch``, ``elmo.read_list``):

* a token is put in NFC (:func:`.bounds.normalize`), as the tokenizer and the
  bilm-tf packer do — an addition to their reader, see below;
* a token longer than ``max_chars - 2`` **code points** is cut to that many
  before anything else (the word lookup sees the cut token too);
* its char row is ``[chars['<eow>'], c0, c1, …, chars['<bow>'], <pad>, …]``
  of length ``max_chars`` — their code swaps the begin/end markers, in
  training and inference alike; a character not in the vocabulary is
  ``<oov>``;
* the sentence boundaries (and a literal input token ``<bos>`` / ``<eos>``)
  are ``[chars['<eow>'], chars['<bos>' or '<eos>'], chars['<bow>'], <pad>, …]``;
* the word id (models with a word-embedding branch) is an exact,
  case-sensitive lookup with ``<oov>`` as the fallback.

As in :mod:`.chars`, **+1** is added to every char id so that an all-zero
row means "no token"; word ids are not shifted.

NFC: their reader looks tokens up as given. Their models were trained on
Wikipedia and Common Crawl text (CoNLL 2018 shared task), which is NFC almost
throughout (MediaWiki stores NFC; the W3C asks the web for it), so a decomposed
``"e\u0301"`` would reach their vocabulary as ``e`` plus a mark the model has
barely seen. Reading every token in NFC gives NFD input the ids of the text the
models learned from, and changes nothing for NFC input (their own test data).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError
from .bounds import normalize

SCHEME_NAME = "codepoint-vocab"
ID_SHIFT = 1
BOS, EOS, OOV, PAD, BOW, EOW = "<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"
CHAR_SPECIALS = (BOS, EOS, OOV, PAD, BOW, EOW)
WORD_SPECIALS = (OOV, BOS, EOS, PAD)
BOUNDARIES = (BOS, EOS)


def cut(token: str, max_chars: int) -> str:
    """The token as it is looked up: in NFC, at most ``max_chars - 2`` code points."""
    token = normalize(token)
    return token[: max_chars - 2] if len(token) + 2 > max_chars else token


@dataclass(frozen=True)
class CodepointScheme:
    """A model's vocabularies: ``chars`` and ``words`` map entries to model ids.

    ``words`` is None for a model without a word-embedding branch. Raises
    :class:`ModelError` when a vocabulary lacks an entry the scheme needs.
    """

    chars: Mapping[str, int]
    max_chars: int
    words: Mapping[str, int] | None = None
    _row_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [s for s in CHAR_SPECIALS if s not in self.chars]
        if missing:
            raise ModelError(f"char vocabulary lacks {', '.join(missing)}")
        if self.words is not None:
            missing = [s for s in WORD_SPECIALS if s not in self.words]
            if missing:
                raise ModelError(f"word vocabulary lacks {', '.join(missing)}")
        if self.max_chars < 3:
            raise ModelError(f"max_characters_per_token must be at least 3, found "
                             f"{self.max_chars}")

    @property
    def has_words(self) -> bool:
        return self.words is not None

    def _char_row(self, token: str) -> np.ndarray:
        """Shifted char ids of one cut token: int32 (max_chars,)."""
        ch, c = self.chars, self.max_chars
        row = np.full(c, ch[PAD] + ID_SHIFT, dtype=np.int32)
        row[0] = ch[EOW] + ID_SHIFT  # swapped markers, as their code does
        if token in BOUNDARIES:
            body = [ch[token]]
        else:
            oov = ch[OOV]
            body = [ch.get(x, oov) for x in token]
        row[1 : 1 + len(body)] = np.asarray(body, dtype=np.int64) + ID_SHIFT
        row[1 + len(body)] = ch[BOW] + ID_SHIFT
        return row

    def char_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Shifted char ids of ``tokens`` (no boundaries added): int32 (n, max_chars)."""
        out = np.empty((len(tokens), self.max_chars), dtype=np.int32)
        cache = self._row_cache
        for i, token in enumerate(tokens):
            token = cut(token, self.max_chars)
            row = cache.get(token)
            if row is None:
                row = self._char_row(token)
                if len(cache) < 65536:
                    cache[token] = row
            out[i] = row
        return out

    def word_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Word ids of ``tokens`` (cut first; ``<oov>`` fallback): int32 (n,).

        Raises ModelError for a model without a word branch.
        """
        if self.words is None:
            raise ModelError("this model has no word-embedding branch")
        words, oov, c = self.words, self.words[OOV], self.max_chars
        return np.fromiter((words.get(cut(t, c), oov) for t in tokens), dtype=np.int32,
                           count=len(tokens))

    def boundary_tokens(self) -> tuple[str, str]:
        """The tokens added around every sentence."""
        return BOS, EOS

    def batch_ids(
        self, sentences: Sequence[Sequence[str]]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """A padded batch with ``<bos>``/``<eos>`` added.

        Returns ``(char_ids, word_ids, lengths)``: char_ids int32 (B, T, C),
        zero past each sentence's end; word_ids int32 (B, T) (padding 0) or
        None without a word branch; lengths int64 (B,) counting the boundaries.
        """
        lengths = np.array([len(s) + 2 for s in sentences], dtype=np.int64)
        steps = int(lengths.max()) if len(sentences) else 2
        char_ids = np.zeros((len(sentences), steps, self.max_chars), dtype=np.int32)
        word_ids = np.zeros((len(sentences), steps), dtype=np.int32) if self.has_words else None
        for b, sentence in enumerate(sentences):
            tokens = [BOS, *sentence, EOS]
            char_ids[b, : len(tokens)] = self.char_ids(tokens)
            if word_ids is not None:
                word_ids[b, : len(tokens)] = self.word_ids(tokens)
        return char_ids, word_ids, lengths

    def to_metadata(self) -> dict[str, Any]:
        """The JSON-able description a model's metadata carries."""
        meta: dict[str, Any] = {
            "scheme": SCHEME_NAME,
            "id_shift": ID_SHIFT,
            "max_chars": self.max_chars,
            "markers": "swapped: a row starts with <eow> and ends with <bow>",
            "chars": dict(self.chars),
        }
        if self.words is not None:
            meta["words"] = dict(self.words)
        return meta


def from_metadata(meta: Any, where: str, n_characters: int | None = None,
                  max_chars: int | None = None, n_words: int | None = None) -> CodepointScheme:
    """Rebuild the scheme from :meth:`CodepointScheme.to_metadata`.

    ModelError if malformed, or if it does not fit a model's options: its
    ``n_characters`` (entries + 1), ``max_chars`` or ``n_words`` (0: no words).
    """
    if not isinstance(meta, dict) or meta.get("scheme") != SCHEME_NAME:
        raise ModelError(f"{where}: char-id scheme is not {SCHEME_NAME!r}")
    if meta.get("id_shift") != ID_SHIFT:
        raise ModelError(f"{where}: char-id shift {meta.get('id_shift')!r}, expected {ID_SHIFT}")
    vocabs = {}
    for key in ("chars", "words"):
        vocab = meta.get(key)
        if vocab is None and key == "words":
            vocabs[key] = None
            continue
        ok = isinstance(vocab, dict) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in vocab.items()
        )
        if not ok:
            raise ModelError(f"{where}: metadata {key} vocabulary is not a {{entry: id}} object")
        vocabs[key] = vocab
    width = meta.get("max_chars")
    if not isinstance(width, int) or isinstance(width, bool):
        raise ModelError(f"{where}: metadata max_chars is missing")
    try:
        scheme = CodepointScheme(vocabs["chars"], width, vocabs["words"])
    except ModelError as e:
        raise ModelError(f"{where}: {e}") from None
    _check_fits(scheme, where, n_characters, max_chars, n_words)
    return scheme


def _check_fits(scheme: CodepointScheme, where: str, n_characters: int | None,
                max_chars: int | None, n_words: int | None) -> None:
    problems = []
    if n_characters is not None and len(scheme.chars) + 1 != n_characters:
        problems.append(f"{len(scheme.chars)} chars for n_characters {n_characters}")
    if max_chars is not None and scheme.max_chars != max_chars:
        problems.append(f"max_chars {scheme.max_chars} vs {max_chars}")
    words = len(scheme.words) if scheme.words is not None else 0
    if n_words is not None and words != n_words:
        problems.append(f"{words} words for word_embedding.n_words {n_words}")
    if problems:
        raise ModelError(f"{where}: vocabularies do not fit the options: {'; '.join(problems)}")


def dumps(scheme: CodepointScheme) -> str:
    """The metadata value (compact JSON, non-ASCII kept as is)."""
    return json.dumps(scheme.to_metadata(), ensure_ascii=False, separators=(",", ":"))
