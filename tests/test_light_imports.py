"""Commands that need no model never import torch: `indexer status`, `indexer drop`, `embed models`, and the checks of
model names, paths and splits (a wrong one is reported before any model loads). Checked in a fresh interpreter
through ``sys.modules``, not by timing (timings: benchmarks/help_startup.py)."""

import json
import subprocess
import sys

import pytest
from support.cli import repo_env
from support.milvus import six_image_database

PROBE = """
import json, sys
from {cli}.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "torch": "torch" in sys.modules, "timm": "timm" in sys.modules}}))
"""


def _run(cli: str, *args, cwd):
    env = repo_env()
    res = subprocess.run(
        [sys.executable, "-c", PROBE.format(cli=cli), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    report = json.loads(res.stdout.strip().splitlines()[-1])
    return report, res


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A Lite database with one collection of a small image folder (vectors that no model made: none is needed)."""
    base = tmp_path_factory.mktemp("light")
    uri, root = six_image_database(base, ("effnet-lite0", "effnet-lite1"))
    return {"uri": uri, "root": root, "base": base}


def test_status_imports_no_torch(database, tmp_path):
    report, res = _run("indexer", "status", "--uri", database["uri"], cwd=tmp_path)
    assert report["code"] == 0 and "2 collection(s)" in res.stdout, res.stderr[-2000:]
    assert not report["torch"] and not report["timm"]


def test_drop_imports_no_torch(database, tmp_path):
    report, res = _run(
        "indexer", "drop", "--model", "effnet-lite1", "--split", "val", "--yes", "--uri", database["uri"], cwd=tmp_path
    )
    assert report["code"] == 0 and "dropped effnet_lite1__data__val" in res.stdout, res.stderr[-2000:]
    assert not report["torch"] and not report["timm"]


def test_embed_models_imports_no_torch_and_still_knows_the_weights(tmp_path):
    report, res = _run("embed", "models", "--json", cwd=tmp_path)
    assert report["code"] == 0 and not report["torch"] and not report["timm"]
    rows = {r["name"]: r for r in json.loads(res.stdout.rsplit("\n{", 1)[0])}
    assert rows["effnet-lite2"]["input_size"] == 260 and rows["vit"]["dim"] == 384
    from support.data import have_effnet_package

    assert rows["effnet-lite0"]["weights_here"] == have_effnet_package()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "resnet", "--split", "val", "--data-root", "{root}"], "unknown model 'resnet'"),
        (["--model", "effnet-lite0", "--split", "val", "--data-root", "{base}/nowhere"], "does not exist"),
        (["--model", "effnet-lite0", "--split", "test", "--data-root", "{root}"], "splits found: val"),
        (
            ["--model", "effnet-lite0", "--split", "val", "--data-root", "{root}", "--checkpoint", "{base}/none.pth"],
            "checkpoint",
        ),
    ],
)
@pytest.mark.parametrize("cli,command", [("indexer", "build"), ("embed", "extract"), ("embed", "check")])
def test_wrong_names_paths_and_splits_are_reported_before_torch(database, tmp_path, cli, command, args, message):
    args = [a.format(root=database["root"], base=database["base"]) for a in args]
    store = ["--uri", database["uri"]] if cli == "indexer" else []
    report, res = _run(cli, command, *args, *store, cwd=tmp_path)
    assert report["code"] == 2 and message in res.stderr, res.stderr[-2000:]
    assert not report["torch"], f"{cli} {command}: torch imported before the error"


def test_a_search_whose_files_are_all_unusable_answers_without_loading_the_model(database, tmp_path):
    from support.data import bomb_png

    big = tmp_path / "big.png"
    big.write_bytes(bomb_png(8000, 7000))
    report, res = _run(
        "indexer",
        "search",
        "--model",
        "effnet-lite0",
        "--split",
        "val",
        "--uri",
        database["uri"],
        "--image",
        tmp_path / "missing.jpg",
        big,
        cwd=tmp_path,
    )
    assert report["code"] == 1
    assert "missing.jpg: no such file or folder" in res.stderr and "big.png: too many pixels" in res.stderr
    assert not report["torch"]


def test_class_names_need_no_torch(tmp_path):
    """The app names classes on its first page (the class filter) without loading a model."""
    env = repo_env()
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from embed.sources.datasets import class_name; "
            "print(class_name('n01440764'), 'torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert res.stdout.split() == ["tench", "False"], res.stderr
