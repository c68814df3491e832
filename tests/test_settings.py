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
