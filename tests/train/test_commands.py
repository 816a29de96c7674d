"""The train / eval / quickstart commands, driven through their own argparse registration."""
import argparse
import json

from mmretrieve.commands import eval as eval_cmd
from mmretrieve.commands import quickstart, train as train_cmd


def _parse(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    for mod in (train_cmd, eval_cmd, quickstart):
        mod.register(sub)
    return p.parse_args(argv)


def test_quickstart_offline_finds_a_matching_top_hit_for_all_9_queries(tmp_path, capsys, monkeypatch, no_network):
    """The README's promise, exactly: 9/9 with the hub offline and every non-loopback socket refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = _parse(["quickstart", "--out", str(tmp_path / "qs")])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    for kind in ("text -> image", "text -> video", "text -> audio", "image -> image", "audio -> audio",
                 "image + text (composed by textual inversion)"):
        assert f"\n[{kind}" in out
    assert out.count("\n[") == 9, out
    assert "\n9/9 queries have a matching top hit." in out, out
    assert no_network.attempts == []


def test_train_then_eval_a_checkpoint(small_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    args = _parse(["train", "--recipe", "synthetic-sample", "--data", small_corpus, "--out", str(out), "--no-progress",
                   "--preset", "tiny-random", "--set", "model.preset_weights=true", "--set", "optim.max_steps=2",
                   "--set", "optim.batch_size=4", "--set", "run.export=null", "--set", "lock.token_embedding=false"])
    assert args.run(args) == 0
    args = _parse(["eval", "--checkpoint", str(out / "last"), "--protocol", "synthetic", "--data", small_corpus,
                   "--json", str(tmp_path / "r.json")])
    assert args.run(args) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["results"]) == {"image", "video", "audio"}
    assert "text->image" in capsys.readouterr().out
