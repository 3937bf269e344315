"""Build the installable QGIS plugin zip: ``python qgis_plugin/build_zip.py [-o OUT.zip]``.

The zip has one top folder (``segearth_qgis/``) holding the plugin's source, its icon and
the repository's top-level ``metadata.txt``. Only an allow-list of text/image file types
goes in, so no binaries or model weights can slip in; the zip must stay under 25 MB.
Standard library only, so it runs under any Python (QGIS' or the engine's).
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE = "segearth_qgis"
ALLOWED_SUFFIXES = {".py", ".png", ".svg", ".ui", ".qm", ".txt", ".md", ".qml"}
MAX_BYTES = 25 * 1024 * 1024


class BuildError(RuntimeError):
    """The plugin zip cannot be built as required."""


def plugin_version(metadata: Path = REPO / "metadata.txt") -> str:
    parser = configparser.ConfigParser()
    parser.read(metadata, encoding="utf-8")
    return parser["general"]["version"]


def plugin_files(source: Path = HERE / PACKAGE) -> list[Path]:
    """Files of the plugin package that go into the zip (sorted, caches skipped)."""
    files = []
    for path in sorted(source.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.name.startswith("."):
            continue
        if path.relative_to(source).as_posix() == "metadata.txt":
            continue  # a link to the top-level metadata.txt, written below from the source
        if path.suffix.lower() not in ALLOWED_SUFFIXES:
            raise BuildError(f"{path} has a file type that must not ship in the plugin zip; remove it")
        files.append(path)
    return files


def build_zip(out: Path | None = None) -> Path:
    """Write the plugin zip and return its path (default ``dist/segearth_qgis-<version>.zip``)."""
    metadata = REPO / "metadata.txt"
    if not metadata.is_file():
        raise BuildError(f"{metadata} is missing; it is the plugin's metadata.txt")
    out = Path(out) if out else REPO / "dist" / f"{PACKAGE}-{plugin_version(metadata)}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    source = HERE / PACKAGE
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files(source):
            archive.write(path, f"{PACKAGE}/{path.relative_to(source).as_posix()}")
        archive.write(metadata, f"{PACKAGE}/metadata.txt")
        license_file = REPO / "LICENSE"
        if license_file.is_file():
            archive.write(license_file, f"{PACKAGE}/LICENSE")
    if tmp.stat().st_size > MAX_BYTES:
        tmp.unlink()
        raise BuildError(f"the plugin zip would be over {MAX_BYTES // 2**20} MB; something large slipped in")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=None, help="zip to write")
    args = parser.parse_args(argv)
    try:
        path = build_zip(args.out)
    except BuildError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
