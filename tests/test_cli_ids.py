"""``build --ids``: int64 ids as before, string document ids kept beside the index and shown by search and info."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR
from test_cli import run

from smec_index import SMEC, _fsutil, read_index
from smec_index.cli import CliError, main, read_ids
from smec_index.index import string_ids

N = 600
# BEIR-like document ids: prefixes, a colon, a number-looking one (debian has the package "2048"), non-ASCII
NAMES = [("2048" if i == 7 else f"MED-{i}" if i % 3 == 0 else f"debian:pkg{i}" if i % 3 == 1 else f"dé{i}")
         for i in range(N)]


@pytest.fixture(scope="module")
def files(tmp_path_factory, synth):
    root = tmp_path_factory.mktemp("cli_ids")
    np.save(root / "X.npy", synth)
    np.save(root / "Q.npy", synth[:5])
    SMEC((16, 8), "pca").fit(synth).save(root / "pca")
    (root / "names.txt").write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    return root


def build(files: Path, out: Path, ids: Path | None, *extra) -> list:
    argv = ["build", "--compressor", files / "pca", "--corpus", files / "X.npy", "--spec", "Flat", "--dims", "8",
            "--out", out, "--quiet", *extra]
    return argv + (["--ids", ids] if ids is not None else [])


@pytest.fixture(scope="module")
def built(files):
    """The same corpus built with string ids and with no ids (row numbers), to compare their results."""
    assert main([str(a) for a in build(files, files / "named", files / "names.txt")]) == 0
    assert main([str(a) for a in build(files, files / "plain", None)]) == 0
    return files


def search_json(index: Path, files: Path, capsys, *extra) -> dict:
    code, out, err = run(["search", "--index", index, "--queries", files / "Q.npy", "-k", "4", "--json", *extra],
                         capsys)
    assert code == 0, err
    return json.loads(out)


# ----------------------------------------------------------------------------- string ids end to end
def test_search_json_prints_the_string_ids(built, capsys):
    named, plain = search_json(built / "named", built, capsys), search_json(built / "plain", built, capsys)
    assert [r["ids"] for r in named["results"]] == [[NAMES[i] for i in r["ids"]] for r in plain["results"]]
    assert [r["scores"] for r in named["results"]] == [r["scores"] for r in plain["results"]]
    assert all(isinstance(x, str) for r in named["results"] for x in r["ids"])
    assert named["results"][0]["ids"][0] == NAMES[0]  # query 0 is corpus row 0


def test_search_text_prints_the_string_ids(built, capsys):
    code, out, err = run(["search", "--index", built / "named", "--queries", built / "Q.npy", "-k", "3"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5 and lines[0].startswith(f"query 0: {NAMES[0]} (1.0000), ")
    assert all(re.fullmatch(r"query \d: (\S+ \(-?\d\.\d{4}\)(, )?){3}", ln) for ln in lines), out
    named = [x for ln in lines for x in re.findall(r"(\S+) \(", ln.split(": ", 1)[1])]
    assert set(named) <= set(NAMES) and not set(named) <= {str(i) for i in range(N)}


def test_a_number_like_string_id_stays_a_json_string(built, capsys):
    Q = np.load(built / "X.npy")[7:8]  # the row whose id is "2048"
    np.save(built / "Q7.npy", Q)
    code, out, err = run(["search", "--index", built / "named", "--queries", built / "Q7.npy", "-k", "1", "--json"],
                         capsys)
    assert code == 0, err
    assert '"ids": ["2048"]' in out


def test_info_says_the_ids_are_strings(built, capsys):
    code, out, err = run(["info", built / "named"], capsys)
    assert code == 0, err
    assert re.search(r"vectors\s+600 \(string ids from ids.json: 'MED-0', 'debian:pkg1', 'dé2', \.\.\.\)", out)
    assert re.search(r"ids.json\s+\S+ \S+ \(\d+ B/vector\)", out)
    code, out, err = run(["info", "--index", built / "named", "--json"], capsys)
    info = json.loads(out)
    assert info["id_type"] == "str" and info["string_ids_file"] == str(built / "named" / "ids.json")
    assert info["bytes"]["ids.json"] == (built / "named" / "ids.json").stat().st_size
    assert info["total_bytes"] == sum(info["bytes"].values())
    plain = json.loads(run(["info", built / "plain", "--json"], capsys)[1])
    assert plain["id_type"] == "int" and "string_ids_file" not in plain
    assert info["ram_bytes"] == plain["ram_bytes"] + info["bytes"]["ids.json"]  # search holds the ids in RAM


def test_reload_keeps_the_ids_and_python_gets_a_hint(built):
    index, ids = string_ids.load(built / "named")
    assert ids == NAMES and index.ntotal == N
    D, I = index.search(np.load(built / "Q.npy"), 2)
    assert I[:, 0].tolist() == list(range(5))  # vector i is corpus row i, named ids[i]
    with pytest.raises(ValueError, match=r"string_ids.load\(path\), which returns \(index, ids\)"):
        read_index(built / "named")
    assert read_index(built / "named" / "index").ntotal == N


def test_build_prints_a_few_of_the_string_ids(files, tmp_path, capsys):
    code, out, err = run(build(files, tmp_path / "o", files / "names.txt"), capsys)
    assert code == 0, err
    assert "with string ids ('MED-0', 'debian:pkg1', 'dé2', ...)" in out and "B/vector" in out
    assert err == ""  # one number-like name among strings ("2048") is no typo: no note


# ----------------------------------------------------------------------------- integer ids, as before
def test_integer_ids_are_int64_as_before(files, tmp_path, capsys):
    ints = [10**12 + 7 * i for i in range(N)]
    # a UTF-8 BOM (Windows editors), spaces around ids and blank lines at the end are tolerated
    (tmp_path / "ints.txt").write_text("\ufeff" + "\n".join(f" {i}\t" for i in ints) + "\n\n  \n", encoding="utf-8")
    code, out, err = run(build(files, tmp_path / "ix", tmp_path / "ints.txt"), capsys)
    assert code == 0 and err == "", err
    assert "string ids" not in out and not (tmp_path / "ix" / string_ids.MANIFEST_NAME).exists()
    index = read_index(tmp_path / "ix")
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["id_mode"] == "explicit"
    got = search_json(tmp_path / "ix", files, capsys)
    D, I = index.search(np.load(files / "Q.npy"), 4)
    assert [r["ids"] for r in got["results"]] == I.tolist() and I[0, 0] == ints[0]
    assert all(isinstance(x, int) for r in got["results"] for x in r["ids"])
    code, out, _ = run(["info", tmp_path / "ix"], capsys)
    assert re.search(r"vectors\s+600 \(caller-chosen int64 ids\)", out)


def test_read_ids_types(tmp_path):
    def ids_of(lines: list[str], id_type: str = "auto"):
        (tmp_path / "i.txt").write_text("\n".join(lines), encoding="utf-8")
        return read_ids(str(tmp_path / "i.txt"), len(lines), id_type)

    got = ids_of(["0", "5", str(2**63 - 1)])
    assert isinstance(got, np.ndarray) and got.dtype == np.int64 and got.tolist() == [0, 5, 2**63 - 1]
    # written otherwise than plainly, or beyond int64: every id stays the string it is
    assert ids_of(["0001", "0002", "10"]) == ["0001", "0002", "10"]
    assert ids_of(["1", str(2**63)]) == ["1", str(2**63)]
    assert ids_of(["-1", "2"]) == ["-1", "2"]
    assert ids_of(["1", "2"], "str") == ["1", "2"]
    got = ids_of(["007", "+8"], "int")
    assert isinstance(got, np.ndarray) and got.tolist() == [7, 8]


# ----------------------------------------------------------------------------- mixed ids
def test_mixed_ids_are_strings_with_a_note(files, tmp_path, capsys):
    lines = [str(i) for i in range(N)]
    lines[3] = "3a"  # one typo in an integer file
    (tmp_path / "mixed.txt").write_text("\n".join(lines), encoding="utf-8")
    code, out, err = run(build(files, tmp_path / "ix", tmp_path / "mixed.txt"), capsys)
    assert code == 0, err
    assert err.strip() == ("# note: --ids: 599 of 600 ids look like int64 integers, but line 4 (corpus row 3) is "
                           "'3a', so every id is kept as a string (search --json gives them as strings); --id-type "
                           "int would refuse that line, --id-type str silences this note")
    got = search_json(tmp_path / "ix", files, capsys)
    assert got["results"][3]["ids"][0] == "3a" and got["results"][0]["ids"][0] == "0"
    code, _, err = run(build(files, tmp_path / "ix", tmp_path / "mixed.txt", "--force", "--id-type", "str"), capsys)
    assert code == 0 and err == ""


def test_id_type_str_keeps_numeric_ids_as_strings(files, tmp_path, capsys):
    (tmp_path / "beir.txt").write_text("\n".join(str(4983 + i) for i in range(N)), encoding="utf-8")
    code, _, err = run(build(files, tmp_path / "ix", tmp_path / "beir.txt", "--id-type", "str"), capsys)
    assert code == 0 and err == "", err
    got = search_json(tmp_path / "ix", files, capsys)
    assert got["results"][0]["ids"][0] == "4983" and all(isinstance(x, str) for x in got["results"][1]["ids"])


# ----------------------------------------------------------------------------- refusals
def _bad_files(t: Path) -> list[tuple[str, list[str], list[str], str]]:
    ok = [f"doc-{i}" for i in range(N)]
    return [
        ("blank", ok[:2] + [""] + ok[2:-1], [],
         r"--ids: line 3 of .*bad.txt \(corpus row 2\) is blank; expected one id on every line"),
        ("spaces only", ok[:4] + ["  \t"] + ok[4:-1], [], r"line 5 of .* \(corpus row 4\) is blank"),
        ("duplicate", ok[:5] + ["doc-1"] + ok[6:], [],
         r"--ids: line 6 of .*bad.txt \(corpus row 5\) repeats 'doc-1' of line 2 \(corpus row 1\); expected 600 "
         r"distinct ids"),
        ("duplicate after strip", ok[:9] + [" doc-2 "] + ok[10:], [], r"line 10 .* repeats 'doc-2' of line 3"),
        ("short", ok[:-2], [],
         r"--ids: .*bad.txt has 598 ids; expected 600, one per corpus row \(corpus rows 598..599 have no id\)"),
        ("long", ok + ["doc-x"], [], r"has 601 ids; expected 600, one per corpus row \(lines 601..601 have no corpus row\)"),
        ("int: mixed", [str(i) for i in range(N - 1)] + ["MED-1"], ["--id-type", "int"],
         r"--ids: line 600 of .* \(corpus row 599\) is 'MED-1'; --id-type int expects one non-negative integer id "
         r"per line \(the default --id-type auto keeps string ids\)"),
        ("int: too big", [str(2**76 if i == 3 else i) for i in range(N)], ["--id-type", "int"],
         r"--ids: line 4 of .* \(corpus row 3\) is 75557863725914323419136; ids must be in 0..2\*\*63-1 \(int64\)"),
        ("int: negative", ["-3"] + [str(i) for i in range(1, N)], ["--id-type", "int"], r"line 1 .* is -3; ids must be"),
        ("int: duplicate value", ["7", "007"] + [str(i) for i in range(10, N + 8)], ["--id-type", "int"],
         r"line 2 .* \(corpus row 1\) repeats '007' of line 1 \(corpus row 0\)"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _bad_files(Path("t"))])
def test_bad_id_files_are_refused_before_anything_is_written(case, files, tmp_path, capsys):
    _, lines, extra, pattern = next(c for c in _bad_files(tmp_path) if c[0] == case)
    (tmp_path / "bad.txt").write_text("\n".join(lines), encoding="utf-8")
    code, out, err = run(build(files, tmp_path / "o", tmp_path / "bad.txt", *extra), capsys)
    assert code == 1 and err.count("\n") == 1 and out == "", err
    assert re.search(pattern, err), err
    assert not (tmp_path / "o").exists()


def test_id_type_needs_ids(files, tmp_path, capsys):
    code, _, err = run(build(files, tmp_path / "o", None, "--id-type", "str"), capsys)
    assert code == 1 and "--id-type goes with --ids FILE" in err and not (tmp_path / "o").exists()
    (tmp_path / "t.txt").write_text("a text\n")
    code, _, err = run(["build", "--texts", tmp_path / "t.txt", "--id-type", "str", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "--id-type goes with embeddings (--corpus)" in err


def test_not_utf8_is_refused(files, tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe" + "\n".join(f"d{i}" for i in range(N)).encode("utf-16-le"))
    code, _, err = run(build(files, tmp_path / "o", tmp_path / "bad.txt"), capsys)
    assert code == 1 and "is not UTF-8 text; expected one id per line" in err


# ----------------------------------------------------------------------------- saves
def test_force_replaces_either_kind_with_the_other(files, tmp_path, capsys):
    out = tmp_path / "ix"
    assert run(build(files, out, files / "names.txt"), capsys)[0] == 0
    code, _, err = run(build(files, out, None), capsys)
    assert code == 1 and "already holds a saved index; pass --force" in err
    assert run(build(files, out, None, "--force"), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["backend-8", "ids.npy", "manifest.json", "smec",
                                                            "store-full.npy"])
    assert search_json(out, files, capsys)["results"][0]["ids"][0] == 0
    code, _, err = run(build(files, out, files / "names.txt"), capsys)
    assert code == 1 and "pass --force" in err
    assert run(build(files, out, files / "names.txt", "--force"), capsys)[0] == 0
    assert search_json(out, files, capsys)["results"][0]["ids"][0] == NAMES[0]
    assert run(build(files, out, files / "names.txt", "--force"), capsys)[0] == 0  # string over string


def test_a_changed_ids_file_is_refused(built, tmp_path, capsys):
    import shutil

    copy = tmp_path / "named"
    shutil.copytree(built / "named", copy)
    ids = json.loads((copy / "ids.json").read_text(encoding="utf-8"))
    ids[0], ids[1] = ids[1], ids[0]
    (copy / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    for argv in (["search", "--index", copy, "--queries", built / "Q.npy"], ["info", copy]):
        code, out, err = run(argv, capsys)
        assert code == 1 and out == "" and "ids.json does not match its sha256 in the manifest" in err, err


def test_an_index_changed_behind_the_ids_is_refused(built, tmp_path, capsys):
    import shutil

    copy = tmp_path / "named"
    shutil.copytree(built / "named", copy)
    index = read_index(copy / "index")
    index.remove_ids(np.array([0]))
    index.save(copy / "index")  # the index alone re-saved: its manifest no longer matches the pinned sha256
    code, _, err = run(["search", "--index", copy, "--queries", built / "Q.npy"], capsys)
    assert code == 1 and re.search(r"index/\S+ (has \d+ bytes; the manifest says|does not match its sha256)", err), err
    # even with the outer manifest rewritten to match, 600 names cannot map 599 vectors in 600 slots
    _fsutil.write_manifest(copy, string_ids.KIND, string_ids.FORMAT_VERSION, {"ntotal": N},
                           name=string_ids.MANIFEST_NAME)
    for argv in (["search", "--index", copy, "--queries", built / "Q.npy"], ["info", copy]):
        code, _, err = run(argv, capsys)
        assert code == 1 and "is inconsistent: 600 string ids, but the index holds 599 vectors in 600 slots" in err, err


def test_a_resealed_ids_file_is_still_checked(built, tmp_path, capsys):
    import shutil

    copy = tmp_path / "named"
    shutil.copytree(built / "named", copy)
    for bad, words in ((NAMES[:3] + [3] + NAMES[4:], r"ids\[3\] is int \(3\); expected str"),
                       (NAMES[:-1], "ids has 599 items; expected 600"),
                       ({"ids": NAMES}, "ids must be a list of str, got dict")):
        (copy / "ids.json").write_text(json.dumps(bad), encoding="utf-8")
        inner = json.loads((copy / "index" / "manifest.json").read_text())["files"]
        _fsutil.write_manifest(copy, string_ids.KIND, string_ids.FORMAT_VERSION, {"ntotal": N},
                               name=string_ids.MANIFEST_NAME, known={f"index/{k}": v for k, v in inner.items()})
        with pytest.raises(ValueError, match=r"string_ids.load: .*ids.json: " + words):
            string_ids.load(copy)
        code, out, err = run(["search", "--index", copy, "--queries", built / "Q.npy"], capsys)
        assert code == 1 and out == "" and re.search(words, err), err


def test_library_save_refuses_what_cannot_map(built, tmp_path):
    index, ids = string_ids.load(built / "named")
    string_ids.save(index, np.array(ids), tmp_path / "from-numpy")  # a numpy array of str is a list of str
    assert string_ids.load(tmp_path / "from-numpy")[1] == ids
    with pytest.raises(ValueError, match="ids has 599 items; expected 600"):
        string_ids.save(index, ids[:-1], tmp_path / "a")
    with pytest.raises(ValueError, match=r"ids\[5\] repeats 'MED-0' of ids\[0\]"):
        string_ids.save(index, ids[:5] + ["MED-0"] + ids[6:], tmp_path / "a")
    with pytest.raises(TypeError, match=r"ids\[2\] is int"):
        string_ids.save(index, ids[:2] + [2] + ids[3:], tmp_path / "a")
    removed = read_index(built / "plain")
    removed.remove_ids(np.array([3]))
    with pytest.raises(ValueError, match="string ids need an index whose vectors were added with add"):
        string_ids.save(removed, ids[:-1], tmp_path / "a")
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- real id files
@pytest.mark.realdata
@pytest.mark.parametrize("dataset, kind, first", [("scifact", "int", 4983), ("debian", "str", "0ad")])
def test_real_beir_id_files(dataset, kind, first):
    path = DATA_DIR.parent / dataset / "emb" / "all-MiniLM-L6-v2" / "corpus_ids.txt"
    if not path.is_file():
        pytest.skip(f"real data not found: {path}")
    n = len(path.read_text(encoding="utf-8").splitlines())
    ids = read_ids(str(path), n)
    assert (isinstance(ids, np.ndarray) if kind == "int" else isinstance(ids, list)) and ids[0] == first
    if kind == "str":  # debian names one package "2048" among 63,904: it stays the string "2048"
        assert "2048" in ids and len(set(ids)) == n
    with pytest.raises(CliError, match="expected 5, one per corpus row"):
        read_ids(str(path), 5)
