"""Helpers for tests/web: paths, node, a browser page that records console errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from elmo_runtime.format import contract

from support import REPO
from support.requires import need

WEB = REPO / "web"
MODELS = REPO / "runtime" / "elmo_runtime" / "models"
FP32 = MODELS / "default.onnx"
INT8 = MODELS / "default.int8.onnx"
# Unknown to both runtimes (newer, older), and read by Python only (none since elmo.mjs reads
# code-point vocabularies, version 3, too)
VERSIONS_REFUSED = (str(max(contract.READABLE_VERSIONS) + 1), "1")
WEB_READS = (contract.FORMAT_VERSION, contract.CODEPOINT_FORMAT_VERSION)
PYTHON_ONLY_VERSIONS = tuple(str(v) for v in contract.READABLE_VERSIONS if v not in WEB_READS)
# a bilm-tf byte model labelled with the code-point version: both runtimes refuse it
MISLABELED_VERSION = str(contract.CODEPOINT_FORMAT_VERSION)
BLANK = ("<!doctype html><meta charset='utf-8'><link rel='icon' href='data:,'>"
         "<title>elmo test</title>")


def node_or_skip() -> str:
    """The path of ``node``; skips the calling test (saying how to get it) without one."""
    need("node")
    return shutil.which("node") or "node"


def run_node(script: Path, stdin: str) -> str:
    """Run ``node script`` with ``stdin``; returns stdout, fails the test on a non-zero exit."""
    done = subprocess.run([node_or_skip(), str(script)], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Page:
    """A fresh page on the test server that records console errors and page errors."""

    def __init__(self, browser: object, base_url: str, path: str = "blank.html", **context: object):
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(base_url + path)

    def close(self) -> None:
        self.context.close()


