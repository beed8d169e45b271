"""Make `examples/paymetrics-example-plugin` importable and discoverable without a network.

`build_plugin_site(directory)` writes what `pip install` would: the package, and a
`*.dist-info` with METADATA and the entry points of the example's pyproject.toml, so that
`importlib.metadata.entry_points()` finds it when `directory` is on `sys.path` (or on
PYTHONPATH of a subprocess). No build backend is needed (none is installed offline).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "paymetrics-example-plugin"


def build_plugin_site(directory: Path) -> Path:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        EXAMPLE / "src" / "paymetrics_example_plugin",
        directory / "paymetrics_example_plugin",
        dirs_exist_ok=True,
    )
    info = directory / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines: list[str] = []
    for group, points in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in points.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    return directory
