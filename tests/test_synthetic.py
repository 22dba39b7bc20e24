"""The built-in dataset: deterministic, shaped as promised, and with real signal in the histories."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from unictr_core.data.dataset import load_dataset
from unictr_core.data.synthetic import THEMES, catalog, generate, theme_of_titles, write_builtin_dataset

FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "dataset.yaml")
JOINT = ("books", "movies", "music")


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("builtin") / "ds"
    write_builtin_dataset(folder, seed=0)
    return folder


def _bytes(folder):
    return {name: (folder / name).read_bytes() for name in FILES}


def test_same_seed_is_byte_identical_and_other_seed_differs(builtin, tmp_path):
    write_builtin_dataset(tmp_path / "again", seed=0)
    write_builtin_dataset(tmp_path / "other", seed=1)
    assert _bytes(tmp_path / "again") == _bytes(builtin)
    other = _bytes(tmp_path / "other")
    assert all(other[name] != _bytes(builtin)[name] for name in FILES[:3])


def test_shape_of_the_builtin_dataset(builtin):
    ds = load_dataset(builtin)
    assert ds.holdout_domains == ["board_games"] and ds.joint_domains == list(JOINT)
    everything = ds.train + ds.valid + ds.test
    sizes = Counter(s.domain for s in everything)
    assert sizes == {"books": 2000, "movies": 1000, "music": 350, "board_games": 1000}
    assert 180 <= len({s.user_id for s in everything}) <= 200
    for s in everything:
        assert re.fullmatch(r"u\d{4}", s.user_id) and re.fullmatch(rf"{s.domain}_\d{{4}}", s.item_id)
        assert s.title and s.brand and re.fullmatch(r"\d+\.\d\d", s.price) and len(s.history) <= 5
    for domain in sizes:
        labels = [s.label for s in ds.train if s.domain == domain]
        assert 0.4 <= np.mean(labels) <= 0.6, domain
        assert len({s.item_id for s in everything if s.domain == domain}) >= 40
    # a user's taste carries across domains: most users act in more than one domain
    domains_per_user = Counter(len({s.domain for s in everything if s.user_id == u})
                               for u in {s.user_id for s in everything})
    assert sum(n for k, n in domains_per_user.items() if k >= 2) > 0.7 * sum(domains_per_user.values())
    assert ds.meta["domains"]["music"]["test"]["rows"] == 35
    held = ds.meta["domains"]["board_games"]
    assert (held["train"]["rows"], held["valid"]["rows"], held["test"]["rows"]) == (500, 100, 400)


# sha256 of the books / movies / music rows of generator version 3, before board_games grew (issue 12)
VERSION_3_DIGESTS = {
    "events 0 1.0": "cd48024522af88936d34562e12249724bb5478aa70155d4f5280aa1baad36263",
    "events 2 0.3": "a6734ac3abad2263f252b194f876fb9c650666183109796f01e5e54ad496593c",
    "train": "0516797f00a69a04519cc9ba5f1a7cc11dda1c175313759cacd3e2c73fa1afb0",
    "valid": "1d2088780ce05b944b6c3b9b243e0e0ed6d3ccfbf59e9f6542d026e642833353",
    "test": "1e6bc56494d8956fa01db4dc818f58c7f412942fe429fef44275989eda1d0d44",
}


def _joint_digest(samples) -> str:
    import hashlib
    import json

    digest = hashlib.sha256()
    for s in samples:
        if s.domain != "board_games":
            digest.update(json.dumps(s.to_dict(), sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def test_only_board_games_grew_every_other_row_is_as_in_version_3(builtin):
    """README numbers on books / movies / music stay valid: their rows (histories included) did not move."""
    ds = load_dataset(builtin)
    got = {"events 0 1.0": _joint_digest(generate(0, 1.0)), "events 2 0.3": _joint_digest(generate(2, 0.3)),
           **{part: _joint_digest(getattr(ds, part)) for part in ("train", "valid", "test")}}
    assert got == VERSION_3_DIGESTS
    # the held-out domain's first six months are version 3's 500 rows; the next six are new and later
    held = sorted((s for s in generate(0, 1.0) if s.domain == "board_games"), key=lambda s: s.timestamp)
    last_joint = max(s.timestamp for s in generate(0, 1.0) if s.domain != "board_games")
    assert sum(s.timestamp > last_joint for s in held) == 500
    assert max(s.timestamp for s in ds.train if s.domain == "board_games") <= last_joint


def test_titles_are_unique_and_speak_their_domain():
    items = catalog(0)
    assert len({i.title for i in items}) == len(items)
    assert {i.theme for i in items} == set(THEMES)
    endings = {"books": r": .+", "movies": r" \(.+\)", "music": r" - .+", "board_games": r", an? .*game"}
    for item in items:
        assert re.search(endings[item.domain], item.title), item.title


def test_histories_come_from_strictly_earlier_positive_events():
    events = generate(seed=2, scale=0.3)
    positives: dict[str, list[tuple[int, str]]] = {}
    for s in events:
        positives.setdefault(s.user_id, [])
        if s.label == 1:
            positives[s.user_id].append((s.timestamp, s.title))
    for s in events:
        expected = [t for ts, t in positives[s.user_id] if ts < s.timestamp][-5:]
        assert s.history == expected


def _history_features(samples, theme_of):
    rows = []
    for s in samples:
        themes = [theme_of[t] for t in s.history]
        matches = sum(t == theme_of[s.title] for t in themes)
        rows.append([matches, matches / len(themes) if themes else 0.0, len(themes), float(not themes)])
    return np.array(rows)


def test_main_signal_is_in_the_history_and_less_in_the_item_id(builtin):
    ds = load_dataset(builtin)
    theme_of = theme_of_titles(seed=0)
    train = [s for s in ds.train if s.domain in JOINT]
    test = [s for s in ds.test if s.domain in JOINT]
    y_train, y_test = [s.label for s in train], [s.label for s in test]

    history_model = LogisticRegression().fit(_history_features(train, theme_of), y_train)
    history_auc = roc_auc_score(y_test, history_model.predict_proba(_history_features(test, theme_of))[:, 1])

    encoder = OneHotEncoder(handle_unknown="ignore").fit([[s.item_id] for s in train])
    id_model = LogisticRegression().fit(encoder.transform([[s.item_id] for s in train]), y_train)
    id_auc = roc_auc_score(y_test, id_model.predict_proba(encoder.transform([[s.item_id] for s in test]))[:, 1])

    print(f"history theme-match AUC {history_auc:.4f}, item-id AUC {id_auc:.4f}")
    assert history_auc >= 0.72
    # item ids carry a real but clearly smaller signal (lasting item quality, popular items seen again)
    assert 0.58 <= id_auc <= 0.68 and history_auc - id_auc >= 0.12

    # the held-out domain carries the same signal (what zero-shot transfer relies on)
    held = [s for s in ds.test if s.domain == "board_games"]
    held_auc = roc_auc_score([s.label for s in held],
                             history_model.predict_proba(_history_features(held, theme_of))[:, 1])
    print(f"held-out board_games history AUC {held_auc:.4f}")
    assert held_auc >= 0.65


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"seed": 1.5}, {"scale": 0}, {"scale": float("nan")},
                                    {"scale": 1000}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate(**kwargs)


def test_scale_changes_row_counts():
    sizes = Counter(s.domain for s in generate(seed=0, scale=0.2))
    assert sizes == {"books": 400, "movies": 200, "music": 70, "board_games": 200}


# ----------------------------------------------------------------------------- the CLI command

def _cli(args):
    from typer.testing import CliRunner

    from unictr_cli.data_cmd import data_app
    return CliRunner().invoke(data_app, args)


def test_cli_generate_writes_folder_and_prints_table(tmp_path, builtin):
    result = _cli(["generate", "--out", str(tmp_path / "ds"), "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert _bytes(tmp_path / "ds") == _bytes(builtin)
    lines = result.output.splitlines()
    assert lines[0].split() == ["domain", "train", "valid", "test", "pos_train", "pos_valid", "pos_test", "holdout"]
    books = next(line.split() for line in lines if line.startswith("books"))
    assert books[1:4] == ["1600", "200", "200"] and books[-1] == "no"
    assert next(line for line in lines if line.startswith("board_games")).split()[-1] == "yes"


def test_cli_generate_errors_are_clean(tmp_path):
    result = _cli(["generate", "--out", str(tmp_path / "ds"), "--scale", "0"])
    assert result.exit_code == 2 and "--scale" in result.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    result = _cli(["generate", "--out", str(foreign)])
    assert result.exit_code == 2 and "refusing to replace" in result.output
    assert "Traceback" not in result.output and (foreign / "notes.txt").read_text() == "keep"
