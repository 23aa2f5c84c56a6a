"""`ragtune adapters list|show|promote|rollback|delete|export|import`: the registry, by hand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from serve.settings import Settings
from tuning.adapter_io import export_adapter, import_adapter
from tuning.adapters import DEFAULT_ALIAS, AdapterRegistry


def _registry(settings: Settings) -> AdapterRegistry:
    return AdapterRegistry(settings.adapters_dir)


def _metric(row: dict[str, Any], key: str) -> str:
    value = row["metrics"].get(key)
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = [a.to_dict(aliases) for a, aliases in _registry(settings).all()]
    if args.name:
        rows = [r for r in rows if r["name"] == args.name]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no adapters yet: train one with `ragtune tune --data FILE --name NAME`")
        return 0
    print(f"{'adapter':<24} {'aliases':<18} {'val loss':>9} {'created':<20} base model")
    for r in rows:
        print(f"{r['ref']:<24} {','.join(r['aliases']) or '-':<18} "
              f"{_metric(r, 'best_val_loss'):>9} {str(r['created_at'])[:19]:<20} "
              f"{r['base_model_id']}")  # fmt: skip
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    adapter = registry.resolve(args.ref)
    aliases = [k for k, v in registry.aliases(adapter.name).items() if v == adapter.version]
    out = {**adapter.to_dict(aliases), "manifest": adapter.manifest}
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    adapter = _registry(settings).promote(args.ref, args.alias)
    print(f"{adapter.name}@{args.alias} -> v{adapter.version}")
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    adapter = _registry(settings).rollback(args.name, args.alias)
    print(f"{adapter.name}@{args.alias} -> v{adapter.version} (rolled back)")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    name, _, version = args.ref.partition("@")
    if version and not version.lstrip("v").isdigit():
        raise ValueError(f"delete takes NAME or NAME@vN, not an alias ({args.ref!r})")
    number = int(version.lstrip("v")) if version else None
    gone = _registry(settings).delete(name, number)
    print(f"deleted {', '.join(f'{name}@v{v}' for v in gone)}")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    adapter = _registry(settings).resolve(args.ref)
    print(f"{adapter.ref} -> {export_adapter(adapter, Path(args.dest))}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    for folder in args.folders:
        adapter, new = import_adapter(registry, Path(folder), args.name)
        if args.promote and (new or args.promote not in registry.aliases(adapter.name)):
            registry.promote(adapter.ref, args.promote)
        state = "imported" if new else "already there"
        print(
            f"{folder} -> {adapter.ref} ({state})" + (f", @{args.promote}" if args.promote else "")
        )
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "adapters", help="list, show, promote, roll back, delete, export or import adapters"
    )
    verbs = p.add_subparsers(dest="verb", required=True)
    v = verbs.add_parser("list", help="every version, with aliases and validation loss")
    v.add_argument("name", nargs="?", help="only this adapter")
    v.add_argument("--json", action="store_true", help="one JSON list")
    v.set_defaults(func=cmd_list, needs_settings=True)
    v = verbs.add_parser("show", help="one version's manifest (NAME, NAME@vN or NAME@alias)")
    v.add_argument("ref")
    v.add_argument("--json", action="store_true", help="one JSON object on one line")
    v.set_defaults(func=cmd_show, needs_settings=True)
    v = verbs.add_parser("promote", help="point an alias (default prod) at a version")
    v.add_argument("ref", help="NAME@vN (or NAME@alias, e.g. brand@candidate)")
    v.add_argument("--alias", default=DEFAULT_ALIAS)
    v.set_defaults(func=cmd_promote, needs_settings=True)
    v = verbs.add_parser("rollback", help="point an alias back at its previous version")
    v.add_argument("name")
    v.add_argument("--alias", default=DEFAULT_ALIAS)
    v.set_defaults(func=cmd_rollback, needs_settings=True)
    v = verbs.add_parser("delete", help="delete NAME@vN (not one an alias points at) or NAME")
    v.add_argument("ref")
    v.set_defaults(func=cmd_delete, needs_settings=True)
    v = verbs.add_parser("export", help="copy one version (weights, config, manifest) to DEST")
    v.add_argument("ref", help="NAME, NAME@vN or NAME@alias")
    v.add_argument("dest", help="a new folder")
    v.set_defaults(func=cmd_export, needs_settings=True)
    v = verbs.add_parser(
        "import", help="publish exported folders as new versions (same weights: skipped)"
    )
    v.add_argument("folders", nargs="+", help="folders written by `ragtune adapters export`")
    v.add_argument("--name", help="publish under this name (default: the manifest's)")
    v.add_argument("--promote", metavar="ALIAS", help="point this alias at it (if new or unset)")
    v.set_defaults(func=cmd_import, needs_settings=True)
