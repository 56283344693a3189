"""The layering of docs/architecture.md: imports point downwards only; ops/ and networks/ stay plain PyTorch
(budget < 1 s: source parsing only)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["ops", "networks", "datamodules", "metrics", "editing", "lightning_modules", "experiments"]
PLAIN = {"ops", "networks"}
TRAINING_STACK = {"pytorch_lightning", "lightning", "hydra", "omegaconf", "wandb"}


def imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_imports_point_downwards_only_and_low_layers_stay_plain():
    violations = []
    for layer in LAYERS:
        files = sorted((ROOT / layer).rglob("*.py"))
        assert files, f"no sources under {layer}/"
        for path in files:
            for module in imports(path):
                top = module.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > LAYERS.index(layer):
                    violations.append(f"{path.relative_to(ROOT)} imports {module} (a higher layer)")
                if layer in PLAIN and top in TRAINING_STACK:
                    violations.append(f"{path.relative_to(ROOT)} imports {module} (ops/ and networks/ stay plain)")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from lightning_modules.gan import GANModule\nimport hydra\n")
    assert imports(bad) == ["lightning_modules.gan", "hydra"]
