"""What a user needs to know when something is off: versions, imports, media backends, device,
weights in the Hugging Face cache, installed extras.

Every check runs on its own and catches its own failure, so one broken piece (a torchaudio that does
not load beside torch) is reported with its fix instead of ending the report. Only the standard
library is imported at module level: the report must work when torch itself does not import.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterable, Mapping

__all__ = ["Check", "run_checks", "trio_problems", "expected_trio", "CORE_PACKAGES", "EXTRAS"]


@dataclass(frozen=True)
class Check:
    """One line of the report.

    ok: True (works), False (broken) or None (not installed / not applicable, for information).
    core: a broken core check makes ``mmretrieve doctor`` exit non-zero.
    fix: what to do, in words, when ``ok`` is False.
    """

    section: str
    name: str
    ok: bool | None
    detail: str
    fix: str | None = None
    core: bool = False


# (distribution, import name, core?) in the order the report lists them
CORE_PACKAGES: tuple[tuple[str, str, bool], ...] = (
    ("torch", "torch", True),
    ("torchvision", "torchvision", True),
    ("torchaudio", "torchaudio", True),
    ("open-clip-torch", "open_clip", True),
    ("faiss-cpu", "faiss", True),
    ("decord", "decord", False),  # optional: PyAV is the fallback (and the only backend off x86-64 Linux)
    ("av", "av", True),
    ("soundfile", "soundfile", True),
    ("numpy", "numpy", True),
    ("pillow", "PIL", True),
    ("safetensors", "safetensors", True),
)

# extra -> the distributions that make it work
EXTRAS: Mapping[str, tuple[str, ...]] = {
    "demo": ("gradio",),
    "ray": ("ray",),
    "milvus": ("pymilvus", "milvus-lite"),
    "train": ("tensorboard",),
    "webdataset": ("webdataset",),
    "clap": ("transformers",),
    "test": ("pytest", "hypothesis"),
    "browser": ("playwright",),
    "serve": ("fastapi", "starlette", "uvicorn", "python-multipart"),
    "watch": ("watchdog",),
}

_TRIO = ("torch", "torchvision", "torchaudio")

# `pip check` lines that are known and harmless: decord 0.6.0's wheel metadata names a cp36 tag that
# its file name does not, and newer pips report that as unsupported although it imports and decodes.
_PIP_CHECK_KNOWN = frozenset({"decord 0.6.0 is not supported on this platform"})


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _public(version: str) -> str:
    """'2.11.0+cu130' -> '2.11.0' (the local build tag does not change which set matches)."""
    return version.split("+", 1)[0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _pins() -> dict[str, str]:
    """Exact pins (NAME==X) among mmretrieve's own requirements, when it is installed."""
    try:
        requires = metadata.requires("mmretrieve") or []
    except metadata.PackageNotFoundError:
        return {}
    pins = {}
    for req in requires:
        m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*==\s*([A-Za-z0-9.+]+)\s*(;.*)?$", req)
        if m and not (m.group(3) and "extra" in m.group(3)):
            pins[m.group(1).lower()] = m.group(2)
    return pins


def expected_trio(torch_version: str, pins: Mapping[str, str]) -> dict[str, str]:
    """The torchvision and torchaudio releases built against ``torch_version``.

    The set mmretrieve pins when torch is the pinned one; otherwise the release rule the three
    projects follow (torchaudio X.Y.Z with torch X.Y.Z, torchvision 0.(Y+15).Z with torch 2.Y.Z).
    """
    torch_version = _public(torch_version)
    if pins.get("torch") == torch_version and "torchvision" in pins and "torchaudio" in pins:
        return {"torchvision": pins["torchvision"], "torchaudio": pins["torchaudio"]}
    parts = torch_version.split(".")
    out = {"torchaudio": torch_version}
    if len(parts) == 3 and parts[0] == "2" and parts[1].isdigit():
        out["torchvision"] = f"0.{int(parts[1]) + 15}.{parts[2]}"
    return out


def trio_problems(versions: Mapping[str, str | None], pins: Mapping[str, str]) -> list[Check]:
    """Mismatches within torch / torchvision / torchaudio, and against mmretrieve's pins, with fixes."""
    torch_v = versions.get("torch")
    if torch_v is None:
        fix = "install torch" + (f"=={pins['torch']}" if "torch" in pins else "")
        return [Check("packages", "torch set", False, "torch is not installed", fix, core=True)]
    problems: list[Check] = []
    if "torch" in pins and _public(torch_v) != pins["torch"]:
        wanted = " ".join(f"{n}=={pins[n]}" for n in _TRIO if n in pins)
        problems.append(Check("packages", "torch set", False,
                              f"torch {torch_v} is not the release mmretrieve is pinned to ({pins['torch']})",
                              f"install {wanted}", core=True))
        return problems
    for name, want in expected_trio(torch_v, pins).items():
        have = versions.get(name)
        if have is None:
            problems.append(Check("packages", "torch set", False, f"{name} is not installed",
                                  f"install {name}=={want}", core=True))
        elif _public(have) != want:
            problems.append(Check("packages", "torch set", False,
                                  f"{name} {have} does not match torch {torch_v}",
                                  f"install {name}=={want}", core=True))
    return problems


def package_checks() -> list[Check]:
    checks: list[Check] = []
    versions: dict[str, str | None] = {}
    for dist, module, core in CORE_PACKAGES:
        version = versions[dist] = _version(dist)
        if version is None:
            if core:
                checks.append(Check("packages", dist, False, "not installed", f"pip install {dist}", core=True))
            else:
                checks.append(Check("packages", dist, None, "not installed (optional: PyAV decodes video instead)"))
            continue
        try:
            importlib.import_module(module)
        except Exception as e:  # an import that fails at load time (missing symbol, bad wheel) is the finding
            checks.append(Check("packages", dist, False, f"{version}, does not import: {_first_line(e)}",
                                f"reinstall {dist} (pip install --force-reinstall {dist}=={_public(version)})",
                                core=core))
        else:
            checks.append(Check("packages", dist, True, version))
    trio = trio_problems(versions, _pins())
    if trio:
        # a failing import of one of the set is explained by the mismatch: give it the mismatch's fix
        fixes = {c.detail.split()[0]: c.fix for c in trio}
        checks = [dataclasses.replace(c, fix=fixes[c.name]) if c.ok is False and c.name in fixes else c
                  for c in checks]
        checks.extend(trio)
    else:
        checks.append(Check("packages", "torch set", True,
                            " / ".join(f"{n} {versions[n]}" for n in _TRIO) + " belong together"))
    return checks


def _media_samples(folder: str) -> tuple[str, str, str]:
    """A 2-second clip, a 1-second tone and a small image, generated here."""
    import numpy as np

    from .media.write import write_audio, write_image, write_video

    t = np.arange(16)[:, None, None, None]
    frames = np.broadcast_to((t * 15 % 255).astype(np.uint8), (16, 32, 32, 3)).copy()
    video = write_video(os.path.join(folder, "doctor.mp4"), frames, fps=8.0)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    audio = write_audio(os.path.join(folder, "doctor.wav"), tone, 16000)
    image = write_image(os.path.join(folder, "doctor.jpg"), frames[8])
    return video, audio, image


def _backend_check(name: str, work: Callable[[], str], core: bool = False) -> Check:
    try:
        return Check("media", name, True, work())
    except Exception as e:  # each backend is tried on its own; its failure is the finding
        return Check("media", name, False, _first_line(e), core=core)


def media_checks() -> list[Check]:
    """Decode a generated clip with each video backend and a generated sound with each audio backend."""
    try:
        from .media.audio import AUDIO_BACKENDS, read_audio_with
        from .media.image import load_image
        from .media.video import decode_all_frames, decord_available
    except Exception as e:
        return [Check("media", "decoders", False, f"cannot import mmretrieve.media: {_first_line(e)}",
                      "see the package lines above", core=True)]
    with tempfile.TemporaryDirectory(prefix="mmretrieve-doctor-") as folder:
        try:
            video, audio, image = _media_samples(folder)
        except Exception as e:
            return [Check("media", "sample media", False, f"cannot write a test clip/sound: {_first_line(e)}",
                          "check the av (PyAV) and soundfile lines above", core=True)]
        checks = [_backend_check("image (pillow)", lambda: "decoded {}x{}".format(*load_image(image).size), core=True)]
        video_checks = []
        for backend in ("decord", "pyav"):
            if backend == "decord" and not decord_available():
                video_checks.append(Check("media", "video: decord", None, "not available (PyAV is used)"))
                continue
            video_checks.append(_backend_check(f"video: {backend}",
                                               lambda b=backend: f"decoded {decode_all_frames(video, b)} frames"))
        def decode_audio(backend: str) -> str:
            samples, rate = read_audio_with(backend, audio)
            return f"decoded {len(samples)} samples at {rate} Hz"

        audio_checks = [_backend_check(f"audio: {b}", lambda b=b: decode_audio(b)) for b in AUDIO_BACKENDS]
        for kind, group in (("video", video_checks), ("audio", audio_checks)):
            checks.extend(group)
            if not any(c.ok for c in group):
                checks.append(Check("media", f"{kind} decoding", False, f"no {kind} backend works",
                                    "reinstall av (pip install --force-reinstall av)"
                                    + (" and soundfile" if kind == "audio" else ""), core=True))
    return checks


def device_checks() -> list[Check]:
    try:
        import torch

        from .embedding import autocast as autocast_for
    except Exception as e:
        return [Check("device", "torch", False, f"skipped: {_first_line(e)}", core=True)]
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        device = torch.device("cuda")
        detail = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {', '.join(names)}"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device, detail = torch.device("mps"), "Apple MPS"
    else:
        capability = torch.backends.cpu.get_cpu_capability()
        device = torch.device("cpu")
        detail = f"CPU ({capability}, {torch.get_num_threads()} threads); no CUDA device"
    dtype = getattr(autocast_for(device), "fast_dtype", None)
    autocast = f"autocast {str(dtype).replace('torch.', '')}" if dtype is not None else "no autocast (float32)"
    return [Check("device", "device", True, f"{device.type}: {detail}; encoding uses {autocast}")]


def weights_checks() -> list[Check]:
    """Where the Hugging Face cache is, and which presets' weights are on this machine."""
    try:
        from .models.presets import get_preset, list_presets
        from .models.weights import cached_pretrained, hf_cache_dir, hub_offline
    except Exception as e:
        return [Check("weights", "presets", False, f"skipped: {_first_line(e)}")]
    cache = hf_cache_dir()
    state = "exists" if os.path.isdir(cache) else "does not exist yet"
    offline = "; HF_HUB_OFFLINE is set" if hub_offline() else ""
    checks = [Check("weights", "Hugging Face cache", None, f"{cache} ({state}){offline}")]
    for name in list_presets():
        try:
            preset = get_preset(name)
            if preset.kind in ("languagebind", "clap"):
                checks.append(_repositories_check(name, preset))
                continue
            if preset.weights is not None and preset.clip.pretrained is None:
                checks.append(Check("weights", name, True, "bundled with the package"))
                continue
            if preset.clip.pretrained is None:
                checks.append(Check("weights", name, None, "random weights (tests, benchmarks)"))
                continue
            path = cached_pretrained(preset.clip.model, preset.clip.pretrained)
        except Exception as e:
            checks.append(Check("weights", name, False, _first_line(e)))
            continue
        if path:
            checks.append(Check("weights", name, True, f"present: {path}"))
        else:
            checks.append(Check("weights", name, None,
                                f"not on this machine ({preset.clip.model} / {preset.clip.pretrained}); fetched on "
                                f"first use when the hub answers, or pass --pretrained PATH"))
    return checks


def _repositories_check(name: str, preset) -> Check:
    """A preset whose weights are Hugging Face repositories per tower (languagebind, clap)."""
    from .models.languagebind import cached_towers

    found = cached_towers(preset)
    missing = [preset.towers[m] for m, path in found.items() if path is None]
    if not missing:
        return Check("weights", name, True, "present: " + ", ".join(f"{m} {p}" for m, p in found.items()))
    return Check("weights", name, None, f"not on this machine ({', '.join(missing)}); fetched on first use when the "
                                        f"hub answers, or pass --pretrained DIR holding the published directories")


def extras_checks(extras: Mapping[str, Iterable[str]] = EXTRAS) -> list[Check]:
    checks = []
    for extra, dists in extras.items():
        found = {d: _version(d) for d in dists}
        if all(found.values()):
            checks.append(Check("extras", extra, True, ", ".join(f"{d} {v}" for d, v in found.items())))
        else:
            missing = [d for d, v in found.items() if v is None]
            checks.append(Check("extras", extra, None, f"not installed ({', '.join(missing)} missing): "
                                                       f'pip install "mmretrieve[{extra}]"'))
    return checks


def pip_check() -> list[Check]:
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [Check("packages", "pip check", None, f"not run: {_first_line(e)}")]
    if out.returncode == 0:
        return [Check("packages", "pip check", True, "no conflicting requirements")]
    if "No module named pip" in out.stderr:
        return [Check("packages", "pip check", None, "not run: this environment has no pip")]
    lines = [line for line in out.stdout.splitlines() if line.strip() and line.strip() not in _PIP_CHECK_KNOWN]
    if not lines:
        return [Check("packages", "pip check", True, "no conflicting requirements (decord's wheel tag aside)")]
    return [Check("packages", "pip check", False, "; ".join(lines[:5]) + (" ..." if len(lines) > 5 else ""),
                  "install the versions named (the README's install uses the lock: pip install -c "
                  "requirements-lock.txt ...)", core=True)]


def run_checks(*, with_pip: bool = True) -> list[Check]:
    """Every section, in the order the report prints them."""
    checks = package_checks()
    if with_pip:
        checks += pip_check()
    return checks + media_checks() + device_checks() + weights_checks() + extras_checks()
