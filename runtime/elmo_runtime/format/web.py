"""What the browser code (``web/``) knows of the format, generated from this package.

``web/contract.json`` is :func:`contract_text`: the format name and versions, the
metadata keys, both char-id schemes' constants and special tokens, the graph's
tensor names, the Unicode form text is read in and the bounds on what a caller
may give (:mod:`.bounds`). ``web/elmo.mjs`` and ``web/src/*.mjs`` read their
constants from it instead of typing them again; ``python -m elmo_runtime.webserve``
rewrites it, and tests/web fail when the checked-in file differs from this.
"""

from __future__ import annotations

import json
from typing import Any

from . import bounds, chars, codepoints, contract


def contract_json() -> dict[str, Any]:
    """The facts ``web/elmo.mjs`` reads, as a JSON-ready dict."""
    return {
        "generated_by": "python -m elmo_runtime.webserve (from elmo_runtime.format.web)",
        "format": contract.FORMAT_NAME,
        "format_version": contract.FORMAT_VERSION,  # the one elmo.mjs reads: bilm-tf byte ids
        "python_reads": list(contract.READABLE_VERSIONS),
        "keys": {
            "format": contract.KEY_FORMAT,
            "format_version": contract.KEY_VERSION,
            "producer_version": contract.KEY_PRODUCER,
            "options": contract.KEY_OPTIONS,
            "char_ids": contract.KEY_CHARS,
            "quantization": contract.KEY_QUANT,
            "source": contract.KEY_SOURCE,
        },
        "char_ids": chars.scheme(),  # as a model's metadata records them
        "char_rows": {  # how format/chars.py packs tokens with those ids
            "bos_token": chars.BOS_TOKEN,
            "eos_token": chars.EOS_TOKEN,
            "default_max_chars": chars.DEFAULT_MAX_CHARS,
            "boundary_rows": chars.N_BOUNDARY_ROWS,
        },
        # version 3: a learned code-point vocabulary (ELMoForManyLangs), read by elmo.mjs too
        "codepoint_format_version": contract.CODEPOINT_FORMAT_VERSION,
        "codepoint_char_ids": {
            "scheme": codepoints.SCHEME_NAME,
            "id_shift": codepoints.ID_SHIFT,
            "char_specials": list(codepoints.CHAR_SPECIALS),
            "word_specials": list(codepoints.WORD_SPECIALS),
            "boundaries": list(codepoints.BOUNDARIES),
            "specials": {
                "bos": codepoints.BOS, "eos": codepoints.EOS, "oov": codepoints.OOV,
                "pad": codepoints.PAD, "bow": codepoints.BOW, "eow": codepoints.EOW,
            },
        },
        "inputs": {
            "token_chars": contract.INPUT_TOKEN_CHARS,
            "token_index": contract.INPUT_TOKEN_INDEX,
            "word_ids": contract.INPUT_WORD_IDS,
        },
        "outputs": {"layers": contract.OUTPUT_LAYERS},
        "text": {"normal_form": bounds.NORMAL_FORM},
        "bounds": {
            "max_sentence_tokens": bounds.MAX_SENTENCE_TOKENS,
            "max_gamma": bounds.MAX_GAMMA,
        },
    }


def contract_text() -> str:
    """:func:`contract_json` as the exact text of ``web/contract.json``."""
    return json.dumps(contract_json(), indent=2) + "\n"
