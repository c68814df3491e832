"""Every command the tool suggests runs as written: each suggestion is run here, as printed."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.builds import extract_config
from support.cli import repo_env
from support.data import REPO, have_effnet_package, make_tiny_layout

from embed.common.settings import RetrievalSettings

needs_effnet = pytest.mark.skipif(not have_effnet_package(), reason="effnet-lite0's weights package is not installed")


def _env(**extra):
    return repo_env(PYTHONUNBUFFERED="1", **extra)


def _cli(*args, cwd, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env or _env(), timeout=timeout
    )


def _run_as_written(command: str, cwd: Path, env=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The suggestion, word for word; `python` is this interpreter (the venv's python)."""
    argv = shlex.split(command)
    assert argv[0] == "python", command
    return _cli(*argv[1:], cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A database holding one collection (timm:test_resnet, random weights) of a small Tiny-ImageNet-like val."""
    from indexer.build import build
    from indexer.milvus_store import VectorStore

    base = tmp_path_factory.mktemp("suggest")
    root = make_tiny_layout(base / "data", n_per_class=3, classes=("n01440764", "n01443537"))
    uri = str(base / "milvus.db")
    store = VectorStore(uri)
    build(
        extract_config(root, base / "emb", batch_size=6),
        store,
        progress=False,
    )
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    return {"uri": uri, "root": root, "base": base}


@pytest.mark.slow
@needs_effnet
def test_the_build_a_search_suggests_for_a_missing_model_runs(indexed, tmp_path):
    import shutil

    uri = str(tmp_path / "copy.db")  # the build adds a collection: the module's database stays as the others expect
    shutil.copytree(indexed["uri"], uri, ignore=shutil.ignore_patterns("LOCK"))
    indexed = {**indexed, "uri": uri}
    query = indexed["root"] / "val" / "images" / "val_0.JPEG"
    search = (
        "-m",
        "indexer",
        "search",
        "--model",
        "effnet-lite0",
        "--split",
        "val",
        "--image",
        str(query),
        "--uri",
        indexed["uri"],
    )
    res = _cli(*search, cwd=tmp_path)
    assert res.returncode == 2
    suggested = re.search(r"Build it: (python -m indexer build [^\n]+)", res.stderr)
    assert suggested, res.stderr
    assert "DIR" not in suggested.group(1) and f"--data-root {indexed['root']}" in suggested.group(1)
    built = _run_as_written(suggested.group(1), tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    again = _cli(*search, cwd=tmp_path)
    # six images, the query one of them: left out of its own hits
    assert again.returncode == 0 and "top 5 in effnet_lite0__data__val" in again.stdout, again.stderr[-2000:]
    assert "left out of its own hits" in again.stdout


@pytest.mark.slow
@needs_effnet
def test_the_embed_check_the_report_suggests_runs(indexed, tmp_path):
    from indexer.evaluation.report import ReportConfig, accuracy

    class ModelOnly:  # the one Run field accuracy() reads when fewer than two models have a check
        model = "effnet-lite0"

    cfg = ReportConfig(out=tmp_path / "report", data_root=indexed["root"], split="val", embeddings=tmp_path / "emb")
    [sentence] = accuracy([ModelOnly()], cfg, indexed["root"].name).sentences
    command = re.search(r"`(python -m embed check [^`]+)`", sentence).group(1)
    assert "MODEL" not in command and f"--data-root {indexed['root']}" in command
    checked = _run_as_written(command, tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    [row] = accuracy([ModelOnly()], cfg, indexed["root"].name).rows
    assert row.model == "effnet-lite0" and row.check is not None and row.check.n == 6
    assert not accuracy([ModelOnly()], cfg, indexed["root"].name).sentences, "nothing left to add"


def _offered(stderr: str, command: str) -> str:
    """The command line a missing collection's error offers on the indexed ones (one line, as printed)."""
    offered = re.search(rf"Or run it on them: (python -m indexer {command} [^\n]+)", stderr)
    assert offered, stderr
    return offered.group(1)


def test_evaluate_of_the_default_models_offers_the_indexed_ones_and_that_runs(indexed, tmp_path):
    """The default --models (gresnet,convnext,vit) is not what was built: the error keeps the build hint, names
    what is indexed for the split, and gives the same evaluate on it, which runs as written."""
    res = _cli(
        "-m", "indexer", "evaluate", "--split", "val", "--features", "raw", "--uri", indexed["uri"], cwd=tmp_path
    )
    assert res.returncode == 2
    assert "Build it: python -m indexer build --model gresnet --split val" in res.stderr
    assert "Indexed for split 'val': timm:test_resnet;" in res.stderr
    offered = _offered(res.stderr, "evaluate")
    assert "--models timm:test_resnet" in offered and f"--uri {indexed['uri']}" in offered, offered
    ran = _run_as_written(offered, tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "| timm:test_resnet ⚠random | raw | 6 | 6 |" in ran.stdout, ran.stdout


def test_search_of_an_unindexed_model_offers_an_indexed_one_and_that_runs(indexed, tmp_path):
    query = str(indexed["root"] / "val" / "images" / "val_0.JPEG")
    res = _cli(
        "-m",
        "indexer",
        "search",
        "--model",
        "vit",
        "--split",
        "val",
        "--image",
        query,
        "--uri",
        indexed["uri"],
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert "Build it: python -m indexer build --model vit" in res.stderr
    offered = _offered(res.stderr, "search")
    assert "--model timm:test_resnet" in offered and "vit" not in offered, offered
    ran = _run_as_written(offered, tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "top 5 in timm_test_resnet__data__val" in ran.stdout, "the query is one of the six: left out"


def test_with_two_datasets_indexed_the_offer_chooses_one_with_data_root_and_drop_offers_nothing(tmp_path):
    """Real collections (synthetic vectors) of two datasets on split val: the offered evaluate takes the dataset with
    the most models, names its data root (evaluating across datasets is refused) and runs; drop names what is indexed
    but offers no command (dropping another model is no suggestion)."""
    import numpy as np

    from benchmarks.synthetic import synthetic_meta
    from embed.common.identity import EmbeddingKey
    from indexer.milvus_store import VectorStore

    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    roots = {"alpha": make_tiny_layout(tmp_path / "alpha"), "beta": make_tiny_layout(tmp_path / "beta")}
    vectors = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    classes = ["n01440764"] * 3 + ["n01443537"] * 3
    for dataset, model in (("alpha", "effnet-lite0"), ("alpha", "effnet-lite1"), ("beta", "effnet-lite2")):
        name = EmbeddingKey(model, dataset, "val").collection_name
        store.ensure_collection(name, synthetic_meta(model, 4, dataset, str(roots[dataset]), rows=6, complete=True))
        store.upsert(name, np.arange(6), vectors, classes, [f"images/val_{i}.JPEG" for i in range(6)], progress=False)
        store.flush(name)
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()

    res = _cli("-m", "indexer", "evaluate", "--split", "val", "--features", "raw", "--uri", uri, cwd=tmp_path)
    assert res.returncode == 2
    assert "Indexed for split 'val': effnet-lite0 (alpha), effnet-lite1 (alpha), effnet-lite2 (beta);" in res.stderr
    offered = _offered(res.stderr, "evaluate")
    assert offered.endswith(f"--models effnet-lite0,effnet-lite1 --data-root {roots['alpha']}"), offered
    ran = _run_as_written(offered, tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "on alpha/val" in ran.stdout and "effnet-lite2" not in ran.stdout

    dropped = _cli("-m", "indexer", "drop", "--model", "vit", "--split", "val", "--uri", uri, cwd=tmp_path)
    assert dropped.returncode == 2 and "Indexed for split 'val': effnet-lite0 (alpha)" in dropped.stderr
    assert "Or run it on them" not in dropped.stderr


def test_a_search_on_a_missing_split_suggests_the_splits_there_are(tmp_path):
    import numpy as np

    from benchmarks.synthetic import synthetic_meta
    from embed.common.identity import EmbeddingKey
    from indexer.milvus_store import VectorStore

    root = make_tiny_layout(tmp_path / "data")  # a val split only
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri)
    meta = synthetic_meta("effnet-lite0", 4, root.name, str(root))
    name = EmbeddingKey("effnet-lite0", root.name, "val").collection_name
    store.ensure_collection(name, meta)
    store.upsert(name, np.arange(2), np.ones((2, 4), np.float32), ["a", "b"], ["x.jpg", "y.jpg"], progress=False)
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    res = _cli(
        "-m",
        "indexer",
        "search",
        "--model",
        "effnet-lite0",
        "--split",
        "test",
        "--image",
        "x.jpg",
        "--uri",
        uri,
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert "indexer build" not in res.stderr, "no build of a split that does not exist"
    assert f"No indexed data set has a split 'test' ({root} hold: val)" in res.stderr


def test_an_empty_database_suggests_the_quick_start(tmp_path):
    res = _cli(
        "-m",
        "indexer",
        "drop",
        "--model",
        "effnet-lite0",
        "--split",
        "val",
        "--uri",
        str(tmp_path / "empty.db"),
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert (
        f"`python -m indexer build --model all --split val --dataset tiny-imagenet --limit 1000 --uri "
        f"{tmp_path / 'empty.db'}`"
    ) in res.stderr


# the pages whose commands a user copies: the README (the front page) and the reference pages it links to
DOC_PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CLIS = {"indexer": "indexer.cli", "embed": "embed.cli"}
OPTIONAL = re.compile(r"\s*\[[^\]]*\]")  # `[--json]`, `[--port 19530]`: the command is shown without them


def documented_commands() -> list:
    """(page, command line) for every `python -m indexer|embed ...` of the pages' bash blocks, as a user runs it:
    continuation lines joined, one command per `&&`/`;`, comments and [optional] parts dropped, a shell loop's
    variable set to its first value; `torchrun ... -m embed` is embed's command line."""
    found = []
    for page in DOC_PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                loop = re.match(r"\s*for (\w+) in (\S+)", line)
                for part in re.split(r"&&|;", line.split("  #")[0].split(" # ")[0]):
                    if loop:
                        part = part.replace(f"${loop.group(1)}", loop.group(2))
                    m = re.search(r"(?:python|torchrun[^-]*(?:--\S+ \S+ )*)\s*-m (indexer|embed)\b(.*)", part)
                    if m and "..." not in m.group(2):  # `ann ... --index IVF_FLAT`: the line above, abbreviated
                        found.append((page.name, (m.group(1) + OPTIONAL.sub("", m.group(2))).strip()))
    return found


def test_the_documentation_has_its_commands():
    pages = {page for page, _ in documented_commands()}
    assert "README.md" in pages and len(pages) >= 2, pages  # the front page, and the reference pages
    assert len(documented_commands()) >= 20


@pytest.mark.parametrize("page,command", documented_commands(), ids=lambda v: v if len(v) < 60 else v[:57] + "...")
def test_every_documented_command_is_one_the_cli_takes_as_written(page, command, capsys, tmp_path, monkeypatch):
    """Parsed by the command's own parser (nothing run): options, choices and values as the CLI checks them."""
    import importlib
    import shlex

    cli, *argv = shlex.split(command)
    # the files a user brings (`--labels labels.csv`, `--checkpoint gresnet50.pth`): here, empty, where it names them
    monkeypatch.chdir(tmp_path)
    for word in argv:
        if not word.startswith(("-", "/", "~", ".")) and Path(word).suffix.lower() in (".csv", ".tsv", ".pth", ".jpg"):
            (tmp_path / word).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / word).touch()
    parser = importlib.import_module(CLIS[cli]).build_parser(RetrievalSettings.from_environment())
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page}: `python -m {command}` is refused: {capsys.readouterr().err.strip()} (exit {e.code})")
    # what it writes goes to data/ (git-ignored), never over the repository's own files
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.splitlines()
    for option in ("report", "report_dir", "json", "csv", "plot", "out", "data_dir"):
        value = getattr(args, option, None)
        if isinstance(value, (str, Path)) and value:
            written = Path(value)
            inside = [t for t in tracked if t == str(written) or t.startswith(f"{str(written).rstrip('/')}/")]
            assert not inside, f"{page}: `{command}` writes over tracked files: {inside[:3]}"


def test_the_readme_report_goes_where_the_evaluation_page_reads():
    default = RetrievalSettings().report_dir
    reports = [c for _, c in documented_commands() if c.startswith("indexer evaluate") and "--report " in c]
    assert reports and all(f"--report {default}" in c for c in reports), reports


def test_indexer_help_calls_the_readme_quick_start_the_quick_start(tmp_path):
    readme = (REPO / "README.md").read_text()
    quick = re.search(r"python -m indexer build --model all [^&\n]*--limit (\d+)", readme)
    res = _cli("-m", "indexer", "--help", cwd=tmp_path)
    helped = re.search(r"--limit (\d+)\s+# the quick start", res.stdout)
    assert quick and helped and helped.group(1) == quick.group(1) == "1000"


@pytest.mark.parametrize(
    "cli,command",
    [("indexer", c) for c in ("build", "status", "search", "drop", "serve", "evaluate")]
    + [("embed", c) for c in ("extract", "check", "models")],
)
def test_each_subcommand_shows_its_own_examples(cli, command, tmp_path):
    res = _cli("-m", cli, command, "--help", cwd=tmp_path)
    assert res.returncode == 0
    examples = [
        line.strip()
        for line in res.stdout.split("examples:", 1)[1].splitlines()
        if line.strip().startswith(("python -m", "torchrun"))
    ]
    assert 1 <= len(examples) <= 5, examples
    assert all(f" {command}" in line for line in examples), examples


@pytest.mark.slow
@needs_effnet
def test_the_readme_own_folder_line_runs_as_written(tmp_path):
    """The quick start's "your own folder" commands, word for word, on a folder of mixed photos at ~/Pictures/shop."""
    from support.data import tiny_imagenet_root

    from benchmarks.own_images import mixed_folder

    readme = (REPO / "README.md").read_text()
    line = re.search(r"`(python -m indexer build --model all --images [^`]+)`", readme)
    assert line, "the README's quick start has no --images line"
    sources = sorted((tiny_imagenet_root() / "val" / "images").iterdir())[:8]
    mixed_folder(sources, tmp_path / "Pictures" / "shop", 8, max_side=300)
    env = _env(HOME=tmp_path)  # ~ is this test's folder
    for command in line.group(1).split(" && "):
        # three models and their copy queries: minutes on a busy 2-core machine
        res = _run_as_written(command, tmp_path, env=env, timeout=1800)
        assert res.returncode == 0, command + "\n" + res.stdout[-3000:] + res.stderr[-3000:]
        assert "unlabelled (--labels none)" in res.stdout
    assert (tmp_path / "data" / "report" / "label_free.html").is_file()
