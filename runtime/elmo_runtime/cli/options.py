"""The embedder options `elmo embed` and `elmo serve` share: one name, one default each.

:func:`embedder_options` adds them to a command; :func:`pop_settings` turns
what click parsed into the one :class:`~elmo_runtime.settings.EmbedderSettings`
(the mix flags into a :class:`~elmo_runtime.settings.MixSpec`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..loading.session import PROVIDERS
from ..mix import MODES
from ..settings import EmbedderSettings, MixSpec
from ..token_cache import DEFAULT_CACHE_MB
from .params import Finite

NAMES = ("model", *MODES, "mix_file", "provider", "threads", "max_batch_tokens",
         "token_cache_mb")

_OPTIONS = (
    click.option("--model", "-m", metavar="NAME|PATH",
                 help="A bundled model by name (default, default-int8) or an elmo-edge .onnx "
                 "file [default: default]."),
    click.option("--all", "all", is_flag=True, help="All L+1 layers (the default)."),
    click.option("--top", is_flag=True, help="The top layer only."),
    click.option("--average", is_flag=True, help="The average of the layers."),
    click.option("--mix", "mix_file", metavar="FILE",
                 help='A scalar-mix JSON file: {"weights": [L+1 numbers], "gamma": 1.0, '
                 '"do_layer_norm": false}. The weights are softmaxed first (AllenNLP\'s '
                 'ScalarMix): vectors = gamma × Σ softmax(weights)_k × layer_k. (all, top or '
                 'average are taken as the flags.)'),
    click.option("--provider", type=click.Choice(PROVIDERS), default="auto", show_default=True,
                 help="onnxruntime execution provider."),
    click.option("--threads", type=click.IntRange(min=1),
                 help="Intra-op threads [default: the CPUs this process may use (taskset, "
                 "cgroup quota); with `elmo embed --engine ray`: the CPUs of each actor, 1]."),
    click.option("--max-batch-tokens", type=click.IntRange(min=1), metavar="N",
                 help="Padded steps (sentences x (longest + 2)) per model run [default: the "
                 "model's: at most 6,400, fewer as the LSTM widens (4,096 for the bundled "
                 "model, 512 for the original ELMo)]."),
    click.option("--token-cache", "token_cache_mb", type=Finite(), default=DEFAULT_CACHE_MB,
                 show_default=True, metavar="MIB",
                 help="Memory (MiB; per actor with `elmo embed --engine ray`) for the vectors of "
                 "tokens seen before, so the char CNN runs once per distinct token; 0 turns it "
                 "off. Results do not depend on it."),
)


def embedder_options(command: Callable) -> Callable:
    """Add the shared embedder options (their values reach the command by :data:`NAMES`)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def _mix(params: dict[str, Any]) -> MixSpec:
    """The one mix the flags ask for; a usage error when two are given."""
    given = [f"--{mode}" for mode in MODES if params[mode]]
    mix_file = params["mix_file"]
    if mix_file is not None:
        if given:
            raise click.UsageError("--mix cannot be combined with --all, --top or --average")
        return MixSpec.of(mix_file)
    if len(given) > 1:
        raise click.UsageError(
            f"{' and '.join(given)} cannot be combined; choose one of --all, --top, --average "
            "or --mix FILE"
        )
    return MixSpec(given[0][2:] if given else "all")


def mix_asked(params: dict[str, Any]) -> bool:
    """Whether a mix flag (--all, --top, --average, --mix) was given."""
    return params["mix_file"] is not None or any(params[mode] for mode in MODES)


def pop_settings(params: dict[str, Any], **more: Any) -> EmbedderSettings:
    """The settings of the shared options in ``params`` (removed from it), with ``more``
    (e.g. ``stateful``, ``batch_size``). Raises click.UsageError, MixError, SettingError."""
    mix = _mix(params)
    values = {name: params.pop(name) for name in NAMES}
    return EmbedderSettings(
        model=values["model"], provider=values["provider"], threads=values["threads"], mix=mix,
        max_batch_tokens=values["max_batch_tokens"], token_cache_mb=values["token_cache_mb"],
        **more,
    )
