"""mmretrieve doctor: a healthy install reports ok; a torchaudio that does not match torch is named with its fix."""
import json
import os
import subprocess
import sys

from mmretrieve.doctor import Check, expected_trio, trio_problems

PINS = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}


def _doctor(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mmretrieve", "doctor", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_expected_trio_uses_the_pins_for_the_pinned_torch():
    assert expected_trio("2.11.0+cu130", PINS) == {"torchvision": "0.26.0", "torchaudio": "2.11.0"}


def test_expected_trio_follows_the_release_rule_for_another_torch():
    assert expected_trio("2.13.1", {}) == {"torchaudio": "2.13.1", "torchvision": "0.28.1"}


def test_trio_problems_names_the_mismatch_and_the_fix():
    problems = trio_problems({"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.1"}, PINS)
    assert problems == [Check("packages", "torch set", False, "torchaudio 2.11.1 does not match torch 2.11.0",
                              "install torchaudio==2.11.0", core=True)]


def test_trio_problems_flags_a_torch_other_than_the_pinned_one():
    (problem,) = trio_problems({"torch": "2.13.0", "torchvision": "0.28.0", "torchaudio": "2.13.0"}, PINS)
    assert problem.core and problem.fix == "install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0"


def test_trio_problems_accepts_a_matched_set_with_local_build_tags():
    assert trio_problems({"torch": "2.11.0+cpu", "torchvision": "0.26.0+cpu", "torchaudio": "2.11.0+cpu"}, PINS) == []


def test_doctor_reports_a_healthy_install():
    out = _doctor("--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True
    by_name = {c["name"]: c for c in report["checks"]}
    for name in ("torch", "torchvision", "torchaudio", "open-clip-torch", "faiss-cpu", "av", "soundfile",
                 "torch set", "pip check", "video: pyav", "audio: soundfile", "audio: pyav", "image (pillow)"):
        assert by_name[name]["ok"] is True, by_name[name]
    assert by_name["video: pyav"]["detail"] == "decoded 16 frames"
    assert by_name["audio: soundfile"]["detail"] == "decoded 16000 samples at 16000 Hz"
    assert by_name["sample"]["detail"] == "bundled with the package"
    assert by_name["device"]["detail"].startswith(("cpu:", "cuda:", "mps:"))
    assert {c["name"] for c in report["checks"] if c["section"] == "extras"} == {
        "demo", "ray", "milvus", "train", "webdataset", "test", "browser", "serve", "watch", "clap"}


def test_doctor_names_a_torchaudio_that_does_not_match_torch(tmp_path):
    # what a fresh install met when the index served torchaudio 2.11.1 beside torch 2.11.0
    fake = tmp_path / "torchaudio"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise OSError('libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace')\n")
    info = tmp_path / "torchaudio-2.11.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.11.1\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = _doctor("--no-pip-check", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "  FAIL  torchaudio           2.11.1, does not import: OSError: libtorchaudio.so: undefined symbol" in out.stdout
    assert "  FAIL  torch set            torchaudio 2.11.1 does not match torch 2.11.0\n" in out.stdout
    # one problem, one fix: the import failure is explained by the mismatch
    assert out.stdout.endswith("1 core problem(s); to fix:\n"
                               "  - torchaudio 2.11.1 does not match torch 2.11.0; install torchaudio==2.11.0\n")
