"""Write a structure-only extract of the Cycles runtime schemas to ``tests/spec/runtime_schemas.json``.

The tests validate request bodies against the protocol's JSON schemas and parse the spec's example
responses, but they must run on a fresh clone without the spec files next to the repository. This
script reads ``cycles-protocol-v0.yaml`` and ``cycles-protocol-extensions-v0.1.26.yaml`` and keeps only
the structural keywords of ``components.schemas`` (types, properties, limits, enums, refs, ...) plus the
``example``/``examples`` values as data fixtures. Descriptions and other prose are dropped.

Usage::

    python scripts/extract_spec.py [--spec-dir DIR] [--check]

``--check`` exits with status 1 if the committed extract differs from what would be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC_DIR = REPO_ROOT.parent / "shared" / "spec"
OUTPUT = REPO_ROOT / "tests" / "spec" / "runtime_schemas.json"
SPEC_FILES = ("cycles-protocol-v0.yaml", "cycles-protocol-extensions-v0.1.26.yaml")

# Keywords whose value is a schema.
_SCHEMA_VALUED = {"items", "additionalProperties", "not"}
# Keywords whose value is a list of schemas.
_SCHEMA_LISTS = {"anyOf", "oneOf", "allOf"}
# Keywords kept verbatim (scalars or data).
_VERBATIM = {
    "type",
    "required",
    "enum",
    "$ref",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "maxItems",
    "minItems",
    "maxProperties",
    "minProperties",
    "pattern",
    "format",
    "const",
    "default",
    "example",
    "examples",
}


def clean_schema(schema: Any) -> Any:
    """Return ``schema`` with only its structural keywords (recursively)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: clean_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_VALUED:
            out[key] = clean_schema(value) if isinstance(value, dict) else value
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [clean_schema(sub) for sub in value]
        elif key in _VERBATIM:
            out[key] = value
    return out


def build_extract(spec_dir: Path) -> dict[str, Any]:
    """Read the spec files in ``spec_dir`` and return the extract document."""
    schemas: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for filename in SPEC_FILES:
        with (spec_dir / filename).open(encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        sources[filename] = str(doc.get("info", {}).get("version", ""))
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            if name in schemas:
                raise SystemExit(f"schema {name!r} defined twice (in {filename})")
            schemas[name] = clean_schema(schema)
    return {"components": {"schemas": schemas}, "sources": sources}


def render(extract: dict[str, Any]) -> str:
    """Serialise the extract deterministically."""
    return json.dumps(extract, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-dir", type=Path, default=DEFAULT_SPEC_DIR)
    parser.add_argument("--check", action="store_true", help="fail if the committed extract is stale")
    args = parser.parse_args(argv)
    text = render(build_extract(args.spec_dir))
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
        if current != text:
            stale = OUTPUT.relative_to(REPO_ROOT)
            print(f"{stale} is out of date; run scripts/extract_spec.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT.relative_to(REPO_ROOT)} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
