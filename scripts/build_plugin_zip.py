#!/usr/bin/env python3
"""Build dist/geodiff_qgis.zip, installable with QGIS > Plugins > Manage and Install Plugins > Install from ZIP.

The zip holds one top-level folder, geodiff_qgis/, as the plugin manager expects. Standard library only, so it
runs under any Python >= 3.8 (QGIS's or geodiff's).
"""

import argparse
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "qgis_plugin" / "geodiff_qgis"
SKIP_DIRS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp"}


def plugin_files(root: Path = PLUGIN):
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            path.is_file()
            and not SKIP_DIRS.intersection(rel.parts)
            and path.suffix not in SKIP_SUFFIXES
            and not path.name.startswith(".")
        ):
            yield path, rel


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")  # written aside, then renamed: no half zip under the final name
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, rel in plugin_files():
            zf.write(path, (Path(PLUGIN.name) / rel).as_posix())
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "geodiff_qgis.zip", help="zip to write")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
