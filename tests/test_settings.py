"""Every numeric RETRIEVAL_* variable is read the same way: unset or empty gives the default, anything that is
not a number of the allowed range is one error naming the variable and its value."""

import pytest

from embed.common.settings import RetrievalSettings, SettingsError


def test_unset_and_empty_variables_give_the_defaults():
    names = ("LITE_WAIT_S", "INSERT_BATCH_BYTES", "LITE_SLOW_ROWS_X_DIM", "MILVUS_RETRIES")
    assert RetrievalSettings.from_environment({}) == RetrievalSettings()
    assert RetrievalSettings.from_environment({f"RETRIEVAL_{n}": "" for n in names}) == RetrievalSettings()


def test_set_values_are_read_as_their_types():
    s = RetrievalSettings.from_environment(
        {
            "RETRIEVAL_LITE_WAIT_S": "2.5",
            "RETRIEVAL_INSERT_BATCH_BYTES": "4096",
            "RETRIEVAL_LITE_SLOW_ROWS_X_DIM": "1000",
            "RETRIEVAL_MILVUS_RETRIES": "0",
        }
    )
    assert (s.lite_wait_s, s.insert_batch_bytes, s.lite_slow_rows_x_dim, s.milvus_retries) == (2.5, 4096, 1000, 0)


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("MILVUS_RETRIES", "-1", "RETRIEVAL_MILVUS_RETRIES='-1': needs at least 0"),
        ("MILVUS_RETRIES", "2.5", "RETRIEVAL_MILVUS_RETRIES='2.5' is not a number"),
        ("INSERT_BATCH_BYTES", "0", "RETRIEVAL_INSERT_BATCH_BYTES='0': needs at least 1"),
        ("INSERT_BATCH_BYTES", "32MB", "RETRIEVAL_INSERT_BATCH_BYTES='32MB' is not a number"),
        ("LITE_SLOW_ROWS_X_DIM", "0", "RETRIEVAL_LITE_SLOW_ROWS_X_DIM='0': needs at least 1"),
        ("LITE_WAIT_S", "nan", "RETRIEVAL_LITE_WAIT_S='nan': needs at least 0.0"),
        ("LITE_WAIT_S", "-1", "RETRIEVAL_LITE_WAIT_S='-1': needs at least 0.0"),
    ],
)
def test_out_of_range_or_malformed_values_are_one_clear_error(name, value, message):
    with pytest.raises(SettingsError) as e:
        RetrievalSettings.from_environment({f"RETRIEVAL_{name}": value})
    assert str(e.value) == message


def _count_readings(monkeypatch) -> list:
    """From now on, every reading of the environment into settings, in this process."""
    readings: list = []
    read = RetrievalSettings.from_environment.__func__  # type: ignore[attr-defined]

    def counted(cls, environ=None):
        readings.append(environ)
        return read(cls, environ)

    monkeypatch.setattr(RetrievalSettings, "from_environment", classmethod(counted))
    return readings


def test_each_command_reads_the_environment_once_and_uses_what_it_read(tmp_path, monkeypatch, capsys):
    """A build (extraction, weights, store), a status and `embed models` each read the RETRIEVAL_* variables once,
    as their entry point does, and what was read is what ran: the embeddings and weights-cache folders the
    variables name."""
    import json

    from milvus_lite.server_manager import server_manager_instance
    from support.data import make_tiny_layout

    from embed import cli as embed_cli
    from indexer import cli

    root = make_tiny_layout(tmp_path / "ds", n_per_class=2)
    uri = str(tmp_path / "milvus.db")
    monkeypatch.setenv("RETRIEVAL_EMBEDDINGS", str(tmp_path / "emb"))
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RETRIEVAL_GRESNET_URL", raising=False)
    cached = tmp_path / "cache" / "gresnet50_blog.pth"  # where the blog checkpoint is kept once downloaded
    cached.parent.mkdir()
    cached.touch()
    readings = _count_readings(monkeypatch)
    build = ["build", "--model", "timm:test_resnet", "--random-init", "--split", "val", "--data-root", str(root)]
    assert cli.main([*build, "--uri", uri, "--workers", "0", "--batch-size", "4", "--no-progress"]) == 0
    assert readings == [None], "one reading of the environment for the whole build"
    assert list((tmp_path / "emb").iterdir()), "the embeddings went where the reading said"
    capsys.readouterr()

    readings.clear()
    assert cli.main(["status", "--uri", uri, "--json"]) == 0
    assert readings == [None]
    [row] = json.loads(capsys.readouterr().out)["collections"]
    assert row["model"] == "timm:test_resnet" and row["rows"] == 4

    readings.clear()
    assert embed_cli.main(["models", "--json"]) == 0
    assert readings == [None]
    gresnet = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "gresnet")
    assert gresnet["weights_here"] and gresnet["weights"] == f"download cache ({cached})", gresnet
    server_manager_instance.release_all()


def test_a_store_and_the_app_backend_use_the_settings_they_are_given(tmp_path, monkeypatch):
    from milvus_lite.server_manager import server_manager_instance

    from app.backend import AppSettings, Backend
    from indexer.milvus_store import VectorStore

    given = RetrievalSettings(insert_batch_bytes=4096, milvus_retries=1, lite_wait_s=0.5)
    readings = _count_readings(monkeypatch)
    store = VectorStore(str(tmp_path / "a.db"), settings=given)
    assert store.settings is given and (store.max_batch_bytes, store.retries) == (4096, 1)
    backend = Backend(AppSettings(uri=str(tmp_path / "b.db"), retrieval=given))
    assert backend.store.settings is given
    assert readings == [], "nothing read the environment: the settings were passed down"
    store.close()
    backend.store.close()
    server_manager_instance.release_all()
