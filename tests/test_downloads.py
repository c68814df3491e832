"""Weights and data sets that download themselves, against local HTTP servers standing in for
Google Drive and the dataset hosts: good files, web pages, truncated files, cut transfers, and
archives that try to escape their folder. The checkpoints are randomly initialised GResNet-50
state dicts saved for the test (fixtures, not real weights)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from support.data import jpeg_bytes, make_tiny_layout

from embed.common.identity import EmbeddingKey
from embed.common.settings import RetrievalSettings
from embed.models.registry import load_model
from embed.models.weights import WeightsUnavailable
from embed.sources.datasets import DatasetError, load_split


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/cut/NAME`` announces NAME's full length but sends half of it and hangs up."""

    hits = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path.startswith("/cut/"):
            body = (Path(self.directory) / self.path[len("/cut/") :]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_Handler,), {"hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_address[1]}", hits=handler.hits)
    httpd.shutdown()
    httpd.server_close()


def _all_files(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# GResNet checkpoint ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gresnet_source():
    torch.manual_seed(7)
    model = timm.create_model("gresnet50")
    with torch.no_grad():  # make the split-norm affines non-trivial so a misplaced tensor shows
        for name, p in model.named_parameters():
            if "affine" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _reference_features(model, x):
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.fixture
def served_checkpoints(server, gresnet_source):
    sd = gresnet_source.state_dict()
    torch.save({"model": sd, "epoch": 599}, server.root / "named.pth")
    # the same tensors in the same order under foreign names: only the structure can place them
    torch.save({f"net.{i:04d}.t": v for i, v in enumerate(sd.values())}, server.root / "renamed.pth")
    (server.root / "quota.html").write_text(
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>"
        "</head><body>Too many users have viewed or downloaded this file</body></html>"
    )
    whole = (server.root / "named.pth").read_bytes()
    (server.root / "truncated.pth").write_bytes(whole[: len(whole) // 3])
    torch.save(timm.create_model("resnet18").state_dict(), server.root / "resnet18.pth")
    return server


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("RETRIEVAL_CACHE", str(folder))
    return folder


@pytest.mark.parametrize("name", ["named.pth", "renamed.pth"])
def test_gresnet_checkpoint_downloads_once_and_loads_by_name_or_structure(
    name, served_checkpoints, gresnet_source, cache, monkeypatch
):
    monkeypatch.setenv("RETRIEVAL_GRESNET_URL", f"{served_checkpoints.url}/{name}")
    loaded = load_model("gresnet")
    served = served_checkpoints.root / name
    assert loaded.weights.source == "download"
    assert loaded.weights.fingerprint == "sha256:" + hashlib.sha256(served.read_bytes()).hexdigest()
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), _reference_features(gresnet_source, x), rtol=1e-4, atol=1e-4)
    # cached: the second load does not touch the server
    hits = len(served_checkpoints.hits)
    assert load_model("gresnet").weights.fingerprint == loaded.weights.fingerprint
    assert len(served_checkpoints.hits) == hits
    assert [p for p in _all_files(cache)] == [Path(loaded.weights.detail).name]


@pytest.mark.parametrize(
    "path,why",
    [
        ("quota.html", "web page"),
        ("truncated.pth", "not a readable checkpoint"),
        ("cut/named.pth", "stopped after"),
        ("missing.pth", "HTTP 404"),
        ("resnet18.pth", "could not be placed"),
    ],
)
def test_bad_gresnet_download_is_a_clear_error_and_leaves_nothing(path, why, served_checkpoints, cache, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_GRESNET_URL", f"{served_checkpoints.url}/{path}")
    with pytest.raises(WeightsUnavailable) as e:
        load_model("gresnet")
    message = str(e.value)
    assert why in message and "--checkpoint PATH" in message
    assert _all_files(cache) == []


def test_build_gresnet_records_the_downloaded_files_sha256_and_replaces_random(
    served_checkpoints, cache, tmp_path, monkeypatch, capsys
):
    """`build --model gresnet`: random weights first (nothing reachable), then the download replaces them."""
    from embed.extraction.shards import EmbeddingStore
    from indexer.cli import main
    from indexer.milvus_store import VectorStore

    data = make_tiny_layout(tmp_path / "tiny", n_per_class=2, classes=("n01440764", "n01443537"))
    uri, out = str(tmp_path / "milvus.db"), tmp_path / "emb"
    argv = [
        "build",
        "--model",
        "gresnet",
        "--split",
        "val",
        "--data-root",
        str(data),
        "--out",
        str(out),
        "--uri",
        uri,
        "--workers",
        "0",
        "--no-progress",
    ]
    monkeypatch.setenv("RETRIEVAL_GRESNET_URL", "http://127.0.0.1:9/gresnet50.pth")  # nothing listens there
    assert main(argv + ["--random-init"]) == 0
    assert main(argv) == 2  # no weights, no --random-init: a clear error, not random weights
    assert "--checkpoint PATH" in capsys.readouterr().err

    monkeypatch.setenv("RETRIEVAL_GRESNET_URL", f"{served_checkpoints.url}/named.pth")
    assert main(argv) == 0  # no --force, no --recreate: random vectors are simply replaced
    sha = "sha256:" + hashlib.sha256((served_checkpoints.root / "named.pth").read_bytes()).hexdigest()
    store = VectorStore(uri)
    (name,) = [c for c in store.client.list_collections() if "gresnet" in c]
    meta = store.meta(name)
    assert meta.identity.weights_source == "download" and meta.identity.weights_fingerprint == sha and meta.complete
    manifest = EmbeddingStore(EmbeddingKey("gresnet", "tiny", "val").folder(out)).read_manifest()
    assert manifest.identity.weights_fingerprint == sha and store.count(name) == 4


def test_model_all_builds_what_is_real_and_says_why_for_the_rest(tmp_path, monkeypatch, capsys):
    from indexer import cli

    data = make_tiny_layout(tmp_path / "tiny", n_per_class=2, classes=("n01440764", "n01443537"))
    monkeypatch.setenv("RETRIEVAL_GRESNET_URL", "http://127.0.0.1:9/gresnet50.pth")
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path / "cache"))
    argv = [
        "build",
        "--model",
        "all",
        "--split",
        "val",
        "--data-root",
        str(data),
        "--out",
        str(tmp_path / "emb"),
        "--uri",
        str(tmp_path / "milvus.db"),
        "--workers",
        "0",
        "--no-progress",
        "--limit",
        "2",
    ]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    built = [line for line in captured.out.splitlines() if line.startswith("{")]
    assert len(built) == 3 and all("RANDOM" not in line for line in built)
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipping ")]
    assert sorted(line.split()[1].rstrip(":") for line in skipped) == ["convnext", "gresnet", "vit"]
    assert all("--checkpoint PATH" in line and "internet" in line for line in skipped)
    summary = captured.err.splitlines()[-1]
    assert summary == (
        "built 3 of 6 models (labelled by the tiny-imagenet layout's annotations, but fewer than two classes: "
        "evaluated as unlabelled): effnet-lite0 (2 rows), effnet-lite1 (2 rows), effnet-lite2 (2 rows); "
        "skipped (no weights here): gresnet, convnext, vit"
    )  # --limit 2 takes two images of the first class

    monkeypatch.setattr("embed.models.weights.weights_obtainable", lambda name, config: (False, "test: none here"))
    assert cli.main(argv) == 2
    assert "no model was built" in capsys.readouterr().err


# datasets ---------------------------------------------------------------------------------------------


def _tiny_zip(path: Path, extra=None) -> None:
    with zipfile.ZipFile(path, "w") as z:
        lines = []
        for i, cls in enumerate(("n01440764", "n01443537")):
            z.writestr(f"tiny-imagenet-200/val/images/val_{i}.JPEG", jpeg_bytes(i))
            lines.append(f"val_{i}.JPEG\t{cls}\t0\t0\t1\t1")
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(lines) + "\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def _imagenette_tgz(path: Path, link: bool = False) -> None:
    with tarfile.open(path, "w:gz") as t:
        for i, cls in enumerate(("n01440764", "n02102040", "n01440764")):
            data = jpeg_bytes(i)
            info = tarfile.TarInfo(f"imagenette2-320/val/{cls}/img_{i}.JPEG")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("imagenette2-320/val/n01440764/passwd.JPEG")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)


@pytest.fixture
def datasets_dir(tmp_path, monkeypatch):
    folder = tmp_path / "datasets"
    monkeypatch.setenv("RETRIEVAL_DATASETS", str(folder))
    return folder


def _serve_dataset(monkeypatch, server, key: str, name: str, md5: bool = True) -> None:
    monkeypatch.setenv(f"RETRIEVAL_DATASET_URL_{key}", f"{server.url}/{name}")
    if md5:
        monkeypatch.setenv(f"RETRIEVAL_DATASET_MD5_{key}", hashlib.md5((server.root / name).read_bytes()).hexdigest())


def test_named_datasets_download_verify_and_extract(server, datasets_dir, monkeypatch):
    from embed.sources.dataset_download import ensure_dataset

    _tiny_zip(server.root / "tiny.zip")
    _imagenette_tgz(server.root / "nette.tgz")
    _serve_dataset(monkeypatch, server, "TINY_IMAGENET", "tiny.zip")
    _serve_dataset(monkeypatch, server, "IMAGENETTE", "nette.tgz")
    tiny = ensure_dataset("tiny-imagenet", progress=False)
    assert tiny == (datasets_dir / "tiny-imagenet-200").resolve()
    assert [r.class_id for r in load_split(tiny, "val").records] == ["n01440764", "n01443537"]
    nette = ensure_dataset("imagenette", progress=False)
    assert load_split(nette, "val").layout == "imagefolder" and len(load_split(nette, "val")) == 3
    # on disk now: found, not downloaded again; archives and staging folders are gone
    hits = len(server.hits)
    assert ensure_dataset("tiny-imagenet", progress=False) == tiny and len(server.hits) == hits
    assert sorted(p.name for p in datasets_dir.iterdir()) == ["imagenette2-320", "tiny-imagenet-200"]


@pytest.mark.parametrize(
    "archive,why",
    [
        ("dotdot", "outside the target folder"),
        ("absolute", "absolute path"),
        ("link", "links"),
        ("corrupt", "damaged or not an archive"),
        ("md5", "does not match"),
        ("cut", "stopped after"),
        ("outside", "not under tiny-imagenet-200/"),
    ],
)
def test_bad_archives_are_refused_and_leave_nothing(archive, why, server, datasets_dir, monkeypatch):
    from embed.sources.dataset_download import ensure_dataset

    key, name, dataset = "TINY_IMAGENET", "bad.zip", "tiny-imagenet"
    if archive == "dotdot":
        _tiny_zip(server.root / name, {"tiny-imagenet-200/../../escaped.txt": b"x"})
    elif archive == "absolute":
        _tiny_zip(server.root / name, {"/tmp/escaped.txt": b"x"})
    elif archive == "outside":
        _tiny_zip(server.root / name, {"elsewhere/file.txt": b"x"})
    elif archive == "link":
        key, name, dataset = "IMAGENETTE", "bad.tgz", "imagenette"
        _imagenette_tgz(server.root / name, link=True)
    elif archive == "corrupt":
        _tiny_zip(server.root / "good.zip")
        whole = (server.root / "good.zip").read_bytes()
        (server.root / name).write_bytes(whole[:100] + bytes(len(whole) - 100))
    else:
        _tiny_zip(server.root / name)
    _serve_dataset(monkeypatch, server, key, name)
    if archive == "md5":
        monkeypatch.setenv(f"RETRIEVAL_DATASET_MD5_{key}", "0" * 32)
    if archive == "cut":
        monkeypatch.setenv(f"RETRIEVAL_DATASET_URL_{key}", f"{server.url}/cut/{name}")
    with pytest.raises(DatasetError, match=why):
        ensure_dataset(dataset, progress=False)
    assert _all_files(datasets_dir) == []
    assert not (datasets_dir.parent / "escaped.txt").exists()
    if archive == "cut":  # the next run starts from nothing and succeeds
        monkeypatch.setenv(f"RETRIEVAL_DATASET_URL_{key}", f"{server.url}/{name}")
        assert len(load_split(ensure_dataset(dataset, progress=False), "val")) == 2


def test_archive_expanding_beyond_the_cap_is_refused(tmp_path):
    from embed.sources.dataset_download import extract_archive

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("tiny-imagenet-200/val/zeros.bin", bytes(4 << 20))  # compresses to a few KiB
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(DatasetError, match="GiB"):
        extract_archive(
            archive, tmp_path / "out", "tiny-imagenet-200", max_bytes=1 << 20, max_entries=10, progress=False
        )
    assert _all_files(tmp_path / "out") == []


def test_data_root_always_wins_and_nothing_is_downloaded(server, datasets_dir, tmp_path, monkeypatch):
    from embed.common.cli_args import resolve_data_root

    _tiny_zip(server.root / "tiny.zip")
    _serve_dataset(monkeypatch, server, "TINY_IMAGENET", "tiny.zip")
    config = RetrievalSettings.from_environment()  # as run_cli reads it, after the variables above
    args = SimpleNamespace(data_root=tmp_path / "mine", dataset="tiny-imagenet", no_progress=True, settings=config)
    assert resolve_data_root(args) == tmp_path / "mine"
    assert server.hits == [] and _all_files(datasets_dir) == []
    args = SimpleNamespace(data_root=None, dataset="tiny-imagenet", no_progress=True, settings=config)
    assert resolve_data_root(args) == (datasets_dir / "tiny-imagenet-200").resolve()
    assert len(server.hits) == 1


def test_a_failed_staged_download_removes_only_the_folders_it_created(tmp_path):
    from embed.sources.download import staged_file

    kept = tmp_path / "cache"
    kept.mkdir()
    dest = kept / "new" / "deeper" / "weights.bin"
    with pytest.raises(RuntimeError), staged_file(dest) as part:
        part.write_bytes(b"half a file")
        raise RuntimeError("connection reset")
    assert not (kept / "new").exists(), "the folders made for the failed download are gone"
    assert kept.is_dir(), "a folder that was there before stays"

    with staged_file(dest) as part:
        part.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and [p.name for p in dest.parent.iterdir()] == ["weights.bin"]
