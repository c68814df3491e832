"""CLI messages (issue 15): fast help without heavy imports, argparse validation, help on every option,
file errors that name the file, read-only locations, dataset inference in evaluate, the milvus-check verdict.

Everything runs the real CLI in subprocesses, the way a user meets these messages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import build_tiny12, repo_env, run  # noqa: F401
from support.data import REPO
from support.waits import HANG_S

PY = sys.executable
HEAVY = ("torch", "timm", "pymilvus", "grpc")

# runs a CLI the way `python -m` does, then reports which heavy modules it imported
PROBE = """
import json, runpy, sys
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module] + argv
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
sys.stdout.flush()
print("\\nPROBE " + json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def probe(module, *argv):
    p = subprocess.run(
        [PY, "-c", PROBE, module, *argv], cwd=REPO, env=repo_env(), capture_output=True, text=True, timeout=HANG_S
    )
    line = [l for l in p.stdout.splitlines() if l.startswith("PROBE ")][-1]
    return json.loads(line[6:]), p.stdout + p.stderr


@pytest.mark.parametrize(
    "module,argv,code,text",
    [
        ("indexer", ["--help"], 0, "examples:"),
        ("indexer", ["search", "--help"], 0, "--image PATH [PATH ...]"),
        ("indexer", ["evaluate", "--help"], 0, "--milvus-check"),
        ("embed", ["--help"], 0, "examples:"),
        ("embed", ["extract", "--help"], 0, "--decode"),
        (
            "indexer",
            ["search", "--model", "vit", "--split", "val", "--image", "a.jpg", "-k", "abc"],
            2,
            "argument -k: expected a positive integer, got 'abc'",
        ),
        (
            "indexer",
            ["evaluate", "--split", "val", "--k", "1,abc"],
            2,
            "argument --k: expected comma-separated positive integers (e.g. 1,5,10), got '1,abc'",
        ),
        ("indexer", ["serve", "--port", "70000"], 2, "a TCP port is at most 65535"),
        (
            "indexer",
            ["robustness", "--split", "val", "--models", " , "],
            2,
            "argument --models: expected comma-separated model names, e.g. gresnet,convnext,vit, got ' , '",
        ),
        (
            "embed",
            ["extract", "--model", "vit", "--split", "val", "--limit", "0"],
            2,
            "argument --limit: expected a positive integer, got 0",
        ),
    ],
)
def test_help_and_argument_errors_need_no_heavy_imports(module, argv, code, text):
    result, output = probe(module, *argv)
    assert result["code"] == code, output
    assert text in output
    assert result["heavy"] == [], f"{module} {' '.join(argv)} imported {result['heavy']}"
    assert "Traceback" not in output


def test_model_lists_are_parsed_once_with_the_blog_models_as_default():
    from embed.common.settings import RetrievalSettings
    from embed.models.catalog import BLOG_MODELS
    from indexer.cli import build_parser

    parser = build_parser(RetrievalSettings())
    for command in ("evaluate", "robustness"):
        assert parser.parse_args([command, "--split", "val"]).models == list(BLOG_MODELS)
        given = parser.parse_args([command, "--split", "val", "--models", " effnet-lite0, vit,"]).models
        assert given == ["effnet-lite0", "vit"]
    assert parser.parse_args(["maps", "--split", "val"]).models is None, "maps: every indexed model"
    assert parser.parse_args(["maps", "--split", "val", "--models", "vit"]).models == ["vit"]


def _all_actions(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for sub_action, _ in _all_actions(sub):
                    yield sub_action, name
        else:
            yield action, parser.prog


@pytest.mark.parametrize("cli", ["indexer.cli", "embed.cli"])
def test_every_option_has_help_text(cli):
    import importlib

    from embed.common.settings import RetrievalSettings

    parser = importlib.import_module(cli).build_parser(RetrievalSettings())
    missing = sorted(
        {
            f"{where}: {'/'.join(a.option_strings)}"
            for a, where in _all_actions(parser)
            if a.option_strings and not (a.help or "").strip()
        }
    )
    assert missing == []


# ---------------------------------------------------------------------------------------------------------
# against a real index: 12 Tiny-ImageNet images with effnet-lite0 (real weights from its pip package)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    return build_tiny12(tmp_path_factory.mktemp("cli_messages"))


@pytest.mark.slow
def test_build_log_names_the_decode_mode_as_the_readme_does(indexed):
    assert "decode=device" in indexed["build_log"] or "decode=workers" in indexed["build_log"]
    assert "decode on cpu" not in indexed["build_log"]


@pytest.mark.slow
def test_search_errors_name_the_file_and_do_not_stop_the_batch(indexed, tmp_path):
    q = tmp_path / "queries"
    q.mkdir()
    shutil.copy(indexed["images"][0], q / "good.JPEG")
    (q / "empty.jpg").write_bytes(b"")
    (q / "text.jpg").write_text("not an image\n")
    missing = tmp_path / "missing.jpg"
    p = run(
        [
            "indexer",
            "search",
            "--model",
            "effnet-lite0",
            "--split",
            "val",
            "-k",
            "3",
            "--json",
            "--image",
            str(q),
            str(missing),
        ],
        cwd=indexed["work"],
    )
    assert p.returncode == 1, p.stderr
    answers = {Path(a["image"]).name: a for a in map(json.loads, p.stdout.splitlines())}
    assert set(answers) == {"good.JPEG", "empty.jpg", "text.jpg", "missing.jpg"}
    assert len(answers["good.JPEG"]["hits"]) == 3 and "error" not in answers["good.JPEG"]
    assert answers["empty.jpg"]["error"] == f"{q / 'empty.jpg'}: empty file"
    assert answers["text.jpg"]["error"] == f"{q / 'text.jpg'}: not an image"
    assert answers["missing.jpg"]["error"] == f"{missing}: no such file or folder"
    for name in ("empty.jpg", "text.jpg", "missing.jpg"):
        assert f"error: {answers[name]['error']}" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_evaluate_infers_the_dataset_and_prints_the_milvus_check_verdict(indexed):
    p = run(
        [
            "indexer",
            "evaluate",
            "--split",
            "val",
            "--models",
            "effnet-lite0",
            "--features",
            "raw",
            "--milvus-check",
            "5",
            "--no-progress",
        ],
        cwd=indexed["work"],
    )
    assert p.returncode == 0, p.stderr
    assert "on tiny12/val" in p.stdout
    assert "milvus check effnet-lite0/raw: 5/5 top-10 neighbour lists from Milvus agree" in p.stdout
    # third-party noise that looked like errors
    for noise in ("mvccTs", "fork_posix", "too_many_pings", "fontManager"):
        assert noise not in p.stderr


@pytest.mark.slow
def test_evaluate_with_an_unindexed_split_names_the_splits_there_are(indexed):
    p = run(
        ["indexer", "evaluate", "--split", "train", "--models", "effnet-lite0", "--no-progress"], cwd=indexed["work"]
    )
    assert p.returncode == 2
    assert "no collection for model 'effnet-lite0', split 'train'" in p.stderr
    # the indexed data set has no train split: building one would fail, so none is suggested
    assert "No indexed data set has a split 'train'" in p.stderr and "hold: val" in p.stderr
    assert "indexer build" not in p.stderr


def _read_only_prefix(folder: Path):
    """A command prefix under which ``folder`` is read-only: a read-only bind mount for root, chmod otherwise."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: no way to make a folder read-only")
    check = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && ! touch {folder}/x",
        ],
        capture_output=True,
    )
    if check.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {check.stderr.decode()[:200]}")
    return [
        "unshare",
        "-m",
        "sh",
        "-c",
        f'mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec "$0" "$@"',
    ]


@pytest.mark.slow
def test_read_only_location_is_reported_as_read_only(indexed, tmp_path):
    ro = tmp_path / "ro"
    shutil.copytree(indexed["work"] / "data" / "milvus.db", ro / "milvus.db", ignore=shutil.ignore_patterns("LOCK"))
    prefix = _read_only_prefix(ro)
    for uri, said in ((ro / "milvus.db", "is in a read-only location"), (ro / "new.db", "")):
        p = subprocess.run(
            prefix + [PY, "-m", "indexer", "status", "--uri", str(uri)],
            cwd=REPO,
            env=repo_env(),
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
        assert p.returncode == 2, p.stdout + p.stderr
        # status creates no database: one that is not there is named as missing, wherever it would be
        expected = f"error: {uri} {said}" if said else f"error: there is no Milvus Lite database at {uri}"
        assert expected in p.stderr, p.stderr
        assert "in use" not in p.stderr and "another process" not in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_build_checks_the_database_is_writable_before_extracting(indexed, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix = _read_only_prefix(ro)
    out = tmp_path / "emb"
    p = subprocess.run(
        prefix
        + [
            PY,
            "-m",
            "indexer",
            "build",
            "--model",
            "effnet-lite0",
            "--split",
            "val",
            "--data-root",
            str(indexed["root"]),
            "--out",
            str(out),
            "--uri",
            str(ro / "m.db"),
            "--no-progress",
        ],
        cwd=REPO,
        env=repo_env(),
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert p.returncode == 2
    assert f"{ro / 'm.db'} is in a read-only location" in p.stderr
    assert "extracting" not in p.stderr and not out.exists(), "nothing is extracted before the write check"
