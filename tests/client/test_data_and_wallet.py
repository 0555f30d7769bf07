"""CSV loading, partitions, and wallet loading (pure, no services)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

from client.data import (
    Dataset,
    Standardizer,
    check_input_contract,
    load_csv,
    load_digits_dataset,
    partition_dirichlet,
    partition_iid,
    save_csv,
)
from client.errors import DataError, WalletError
from client.wallet import (
    ENV_KEY_FILE,
    ENV_KEYSTORE_PASSWORD,
    ENV_PRIVATE_KEY,
    KeystorePasswordRequired,
    Wallet,
)
from fedledger.datasets import input_contract
from fedledger.devkeys import dev_private_key


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -------------------------------------------------------------------------------------------- data
def test_csv_with_header_label_last_is_standardized(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "age,income,label\n30,1000,0\n40,3000,1\n50,2000,2\n")
    data = load_csv(path)
    assert data.feature_names == ("age", "income") and data.y.tolist() == [0, 1, 2]
    assert data.x.dtype == np.float32 and np.allclose(data.x.mean(axis=0), 0, atol=1e-6)
    assert np.allclose(data.x.std(axis=0), 1, atol=1e-5)
    raw = load_csv(path, standardize=False)
    assert raw.x[:, 1].tolist() == [1000, 3000, 2000] and raw.standardizer is None


def test_csv_label_column_by_name_or_index_and_shared_standardizer(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "y,a,b\n1,0.5,2\n0,1.5,4\n")
    by_name = load_csv(path, "y", standardize=False)
    assert by_name.y.tolist() == [1, 0] and by_name.x.tolist() == [[0.5, 2], [1.5, 4]]
    no_header = write(tmp_path / "n.csv", "1,0.5,2\n0,1.5,4\n")
    assert load_csv(no_header, 0, standardize=False).y.tolist() == [1, 0]
    assert load_csv(no_header, standardize=False).y.tolist() == [2, 4]
    shared = Standardizer(np.array([1.0, 3.0], np.float32), np.array([0.5, 1.0], np.float32))
    shared.save(tmp_path / "scaler.json")
    scaled = load_csv(path, "y", standardizer=Standardizer.load(tmp_path / "scaler.json"))
    assert scaled.x.tolist() == [[-1, -1], [1, 1]]


@pytest.mark.parametrize(
    ("content", "label", "message"),
    [
        ("a,label\n1,0\n2,0.5\n", None, r":3: label '0.5' is not a non-negative integer"),
        ("a,label\n1,0\n2,cat\n", None, r":3: label 'cat' is not a number"),
        ("a,b,label\n1,x,0\n", None, r":2: feature value 'x' is not a number"),
        ("a,b,label\n1,2,0\n1,0\n", None, r":3: 2 cells, expected 3"),
        ("a,label\n1,0\n", "target", r"no column 'target'; columns: a, label"),
        ("1,0\n", "target", "no header row"),
        ("a,label\n", None, "no data rows"),
        ("a,label\nnan,1\n", None, ":2: NaN"),
    ],
)
def test_bad_csv_files_say_what_and_where(
    tmp_path: Path, content: str, label: str | None, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        load_csv(write(tmp_path / "bad.csv", content), label)


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "nope.csv")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    data = load_digits_dataset("train").subset(range(50))
    save_csv(data, tmp_path / "digits.csv")
    back = load_csv(tmp_path / "digits.csv", "label", standardize=False)
    assert (
        np.allclose(back.x, data.x)
        and np.array_equal(back.y, data.y)
        and back.feature_names == data.feature_names
    )


def test_iid_partition_covers_everything_once() -> None:
    data = load_digits_dataset("all")
    parts = partition_iid(data, 5, seed=1)
    assert sorted(len(p) for p in parts) == [359, 359, 359, 360, 360]
    assert sum(int(p.y.sum()) for p in parts) == int(data.y.sum())
    assert [len(p) for p in partition_iid(data, 5, seed=1)] == [len(p) for p in parts]


def test_dirichlet_partition_is_non_iid_and_reproducible() -> None:
    data = load_digits_dataset("all")
    parts = partition_dirichlet(data, 5, alpha=0.1, seed=3, min_size=20)
    assert sum(len(p) for p in parts) == len(data) and min(len(p) for p in parts) >= 20
    histograms = np.array([np.bincount(p.y, minlength=10) / len(p) for p in parts])
    iid = np.array([np.bincount(p.y, minlength=10) / len(p) for p in partition_iid(data, 5, seed=3)])
    # Skewed label distributions: far from the global one, much more than an IID split.
    assert histograms.std(axis=0).mean() > 5 * iid.std(axis=0).mean()
    again = partition_dirichlet(data, 5, alpha=0.1, seed=3, min_size=20)
    assert all(np.array_equal(a.y, b.y) for a, b in zip(parts, again, strict=True))
    with pytest.raises(DataError):
        partition_dirichlet(data, 5, alpha=0.0)


def test_stratified_split() -> None:
    data = Dataset(np.arange(40, dtype=np.float32).reshape(20, 2), np.repeat([0, 1], 10))
    train, test = data.split(0.3, seed=0)
    assert len(train) + len(test) == 20 and np.bincount(test.y).tolist() == [3, 3]


# -------------------------------------------------------------------------------------------- wallet
KEY = dev_private_key(10)
ADDRESS = Account.from_key(KEY).address


def test_wallet_from_env_and_from_a_key_file(tmp_path: Path) -> None:
    assert Wallet.from_env({ENV_PRIVATE_KEY: KEY}).address == ADDRESS
    key_file = write(tmp_path / "key", KEY[2:] + "\n")  # without 0x, with a newline
    assert Wallet.load(key_file).address == ADDRESS
    assert Wallet.from_env({ENV_KEY_FILE: str(key_file)}).address == ADDRESS
    wallet = Wallet(KEY)
    assert KEY[2:] not in repr(wallet) and wallet.is_dev_key
    assert not Wallet(Account.create().key.to_0x_hex()).is_dev_key


def test_wallet_from_an_encrypted_keystore(tmp_path: Path) -> None:
    keystore = Account.encrypt(KEY, "s3cret", kdf="pbkdf2", iterations=1000)
    path = write(tmp_path / "keystore.json", json.dumps(keystore))
    assert Wallet.load(path, password="s3cret").address == ADDRESS
    assert Wallet.load(path, env={ENV_KEYSTORE_PASSWORD: "s3cret"}).address == ADDRESS
    with pytest.raises(WalletError, match="wrong password"):
        Wallet.load(path, password="guess")
    with pytest.raises(KeystorePasswordRequired, match="password"):
        Wallet.load(path, env={})
    assert Wallet(KEY).to_keystore("pw")["address"].lower() == ADDRESS[2:].lower()


@pytest.mark.parametrize("bad", ["", "0x1234", "zz" * 32, "0x" + "00" * 32])
def test_bad_keys_are_refused_without_echoing_them(bad: str, tmp_path: Path) -> None:
    with pytest.raises(WalletError) as error:
        Wallet.load(write(tmp_path / "key", bad))
    if bad:
        assert bad.removeprefix("0x") not in str(error.value)


def test_no_wallet_configured_says_how(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match="FEDLEDGER_CLIENT_PRIVATE_KEY"):
        Wallet.from_env({})
    with pytest.raises(WalletError, match="does not exist"):
        Wallet.load(tmp_path / "missing")


DIGITS_CONTRACT = input_contract("digits")


@pytest.mark.parametrize(
    ("x", "y", "standardized", "message"),
    [
        (np.full((4, 10), 0.5), [0, 1, 2, 3], False, "the data has 10 feature columns, the model expects 64"),
        (np.full((4, 64), 0.5), [0, 1, 2, 10], False, "labels 0..10, the model expects class ids 0..9"),
        (
            np.tile(np.linspace(0, 16, 64), (4, 1)),
            [0, 1, 2, 3],
            False,
            "values 0-16, the model expects [0, 1]: scale your pixels by 1/16",
        ),
        (
            np.tile(np.linspace(0, 255, 64), (4, 1)),
            [0, 1, 2, 3],
            False,
            "values 0-255, the model expects [0, 1]: scale your pixels by 1/255",
        ),
        (
            np.tile(np.linspace(-1.5, 2.5, 64), (4, 1)),
            [0, 1, 2, 3],
            True,
            "values -1.5 to 2.5, the model expects [0, 1]: the features were standardized here",
        ),
        (
            np.tile(np.linspace(-1.5, 2.5, 64), (4, 1)),
            [0, 1, 2, 3],
            False,
            "values -1.5 to 2.5, the model expects [0, 1]: the pixels look centred or standardized",
        ),
    ],
)
def test_data_is_checked_against_the_model_input_contract(
    x: np.ndarray, y: list[int], standardized: bool, message: str
) -> None:
    scaler = Standardizer(np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32))
    data = Dataset(x.astype(np.float32), np.asarray(y), standardizer=scaler if standardized else None)
    with pytest.raises(DataError) as refused:
        check_input_contract(data, DIGITS_CONTRACT)
    assert message in str(refused.value)


def test_the_bundled_task_in_its_own_scale_meets_its_contract() -> None:
    check_input_contract(load_digits_dataset("train"), DIGITS_CONTRACT)
