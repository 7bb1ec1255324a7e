"""Issue 24 item 6: memory comes back after a large job. onnxruntime's CPU arena kept the peak
of the largest run (RSS 241 MiB after a 16 x 2,000-token job and 20 small batches, 101 MiB
for the small ones alone); handing its chunks back after every run (the first fix) brought
that to 128-144 MiB but doubled RSS on a real corpus (709-727 MiB against 356), so CPU
sessions now have no arena: 132 MiB and 310-324 MiB (bench/threads.py --arena)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import SettingError
from elmo_runtime.settings import EmbedderSettings

CHILD = """
import json, os, random, sys
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import SettingError
from elmo_runtime.settings import EmbedderSettings
words = "the a bank river money interest rate sat on they raised its of in to and".split()
rng = random.Random(0)
emb = Embedder(threads=1, token_cache_mb=0)
if sys.argv[1] == "large":
    emb.embed_batch([[rng.choice(words) for _ in range(2000)] for _ in range(16)])
for _ in range(20):
    emb.embed_batch([[rng.choice(words) for _ in range(rng.randint(5, 25))] for _ in range(8)])
with open("/proc/self/statm") as f:
    print(json.dumps(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20))
"""


def test_cpu_sessions_have_no_arena(toy_model_path: Path) -> None:
    emb = Embedder(toy_model_path)
    assert emb._session.get_session_options().enable_cpu_mem_arena is False
    assert emb._run_options is None  # nothing to shrink


def test_the_service_keeps_the_arena(toy_model_path: Path) -> None:
    """`elmo serve` unmaps every freed block over 256 KiB (serve/command.py), so its tensors
    come from onnxruntime's arena (without it: 0.8x the throughput at 32 clients), shrunk
    after each run (kept whole: +172 MiB held by 8 clients that never read)."""
    from elmo_runtime.serve.config import ServeConfig
    from elmo_runtime.serve.service import Service

    service = Service(ServeConfig(embedder=EmbedderSettings(model=str(toy_model_path))))
    assert service.embedder._session.get_session_options().enable_cpu_mem_arena is True
    options = service.embedder._run_options
    assert options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_the_arena_setting_takes_only_a_bool() -> None:
    with pytest.raises(SettingError, match="cpu_memory_arena must be True or False"):
        EmbedderSettings(cpu_memory_arena="yes")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="RSS read from /proc")
def test_rss_after_a_large_job_comes_back() -> None:
    """RSS after 16 x 2,000 tokens then 20 small batches is within 60 MiB of 20 small ones
    alone (measured: 132 MiB against 101-103 MiB; 241 MiB with onnxruntime's arena)."""
    def rss(kind: str) -> float:
        done = subprocess.run([sys.executable, "-c", CHILD, kind], capture_output=True,
                              text=True, check=True, timeout=600)
        return json.loads(done.stdout.strip().splitlines()[-1])

    small, large = rss("small"), rss("large")
    assert large - small < 60, (large, small)
