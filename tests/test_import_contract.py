"""The import contract covers every module of snngen (a new module must take its place in a
layer of ``pyproject.toml``'s ``[tool.importlinter]``, see docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_top_level_module_has_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    src = ROOT / "src" / "snngen"
    modules = {f"snngen.{p.stem}" for p in src.glob("*.py") if p.stem != "__init__"}
    packages = {f"snngen.{p.parent.name}" for p in src.glob("*/__init__.py")}
    assert modules | packages == named
