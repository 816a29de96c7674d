"""mmretrieve doctor: what works on this machine, and the fix for what does not."""
from __future__ import annotations

import argparse
import dataclasses

from ._common import print_json

_MARK = {True: "ok", False: "FAIL", None: "--"}
_TITLES = {"packages": "Packages", "media": "Media decoding", "device": "Device", "weights": "Weights",
           "extras": "Extras"}


def register(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this installation: versions, imports, media backends, device, cached weights, extras",
        description="Report the versions of torch/torchvision/torchaudio/open_clip/faiss/decord/av/soundfile and "
        "whether each imports, decode a generated clip and sound with every backend, show the device and "
        "autocast dtype, the Hugging Face cache and which presets' weights it holds, and the extras installed. "
        "Exits 1 when a core piece is broken, with the fix in words.",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--no-pip-check", action="store_true", help="skip `pip check` (it takes a few seconds)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..doctor import run_checks

    checks = run_checks(with_pip=not args.no_pip_check)
    broken = [c for c in checks if c.ok is False and c.core]
    if args.json:
        print_json({"ok": not broken, "checks": [dataclasses.asdict(c) for c in checks]})
        return 1 if broken else 0
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            print(f"{'' if c is checks[0] else chr(10)}{_TITLES.get(section, section)}")
        print(f"  {_MARK[c.ok]:>4}  {c.name:<20} {c.detail}")
    warnings = [c for c in checks if c.ok is False and not c.core]
    print()
    if broken:
        # a mismatch within the torch set explains its members' import failures: one line per fix, the set's first
        todo: dict = {}
        for c in sorted(broken, key=lambda c: c.name != "torch set"):
            todo.setdefault(c.fix or c.detail, c)
        print(f"{len(todo)} core problem(s); to fix:")
        for c in todo.values():
            print(f"  - {c.detail}; {c.fix or 'see above'}")
    else:
        print("mmretrieve is ready" + (f" ({len(warnings)} warning(s) above)" if warnings else "") + ".")
    for c in warnings:
        if c.fix:
            print(f"  - {c.name}: {c.fix}")
    return 1 if broken else 0
