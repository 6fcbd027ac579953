"""The docs never rot: every code block in docs/ runs, every result table matches its JSON, every link resolves.

Code blocks run in file order, in one namespace per file and a fresh working directory: ```python blocks
with ``exec``; ```bash blocks line by line, each line a ``smec-index`` command run in-process (exit status
0 required; nothing else is allowed there, so the docs stay cheap and portable). ```text blocks and
untagged ones are pictures and file layouts, not code. Tables between ``<!-- generated: KIND FILE -->``
and ``<!-- end generated -->`` are rendered from ``FILE`` (a JSON under benchmarks/results/); regenerate
them with ``python tests/test_docs.py --update``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
GENERATED = re.compile(r"(<!-- generated: (\w+) (\S+) -->\n)(.*?)(<!-- end generated -->)", re.S)
RUN = ("python", "bash")
NOT_CODE = ("", "text")


def code_blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, code, line number) of every fenced block of a markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def bash_commands(code: str) -> list[str]:
    """Logical lines of a bash block (backslash continuations joined), comments and blank lines dropped."""
    return [ln.strip() for ln in code.replace("\\\n", " ").splitlines() if ln.strip() and not ln.strip().startswith("#")]


# ----------------------------------------------------------------------------- result renderers
def _commit(p: dict) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import commit_note

    return commit_note(p)


def _machine(m: dict, extra: str = "") -> str:
    v = m.get("versions", {})
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    return (f"Machine: {m['cpu']}, {m['cores']} cores{mem}; Python {m['python']}, torch {v.get('torch')}, "
            f"numpy {v.get('numpy')}, faiss-cpu {v.get('faiss-cpu')}; {m['date']}{extra}.")


def render_demo(p: dict, rel: str) -> str:
    from smec_index.demo import demo_tables

    prov = p["provenance"]
    return (f"`{prov['command_line']}`: {p['dataset']} / {p['model']}, {p['n_docs']:,} documents, "
            f"{p['n_test_queries']} test queries, supervised training on {p['n_train_queries']} train queries; "
            f"{p['wall_s']:.0f} s wall, {_fits(p)}; commit {(prov['commit'] or '?')[:10]}.\n"
            f"{_machine(p['environment'])}\n\n" + demo_tables(p))


def _fits(p: dict) -> str:
    t, load = p["train_s"], p.get("load_avg_1min") or {}
    n = p.get("train_threads") or {}
    on = {k: f" on {n[k]} torch thread{'s' if n[k] > 1 else ''}" if n.get(k) else "" for k in t}
    out = (f"training {t['smec/unsupervised']:.0f} s without labels{on['smec/unsupervised']} and "
           f"{t['smec/supervised']:.0f} s with them{on['smec/supervised']}")
    if load.get("start") is not None:
        out += f"; 1-minute load average {load['start']} at the start, {load['end']} at the end"
    return out


def render_demo_summary(p: dict, rel: str) -> str:
    """One line for README: how long the committed demo run took, and on what."""
    env = p["environment"]
    return (f"The committed run took {p['wall_s']:.0f} s ({_fits(p)}) on {env['cores']} cores of an {env['cpu']} "
            f"({env['date'][:10]}; [{Path(rel).name}]({rel})).")


def render_quality(p: dict, rel: str) -> str:
    from smec_index.compressor import METHODS
    from smec_index.quality import ALL_MODES, MODES, default_dims
    from smec_index.report import ablation_table, quality_tables, quality_targets

    cmd = f"python benchmarks/quality.py --data {p['data']} --model {p['model']}"
    if list(p["dims"]) != list(default_dims(p["dim"])):
        cmd += " --dims " + ",".join(map(str, p["dims"]))
    if p.get("sample"):
        cmd += f" --sample {p['sample']}"
    methods = list(dict.fromkeys(r["method"] for r in p["records"] if r["method"] != "full"))
    if set(methods) != set(METHODS):
        cmd += " --methods " + ",".join(methods)
    modes = [m for m in ALL_MODES if any(r["mode"] == m for r in p["records"])]
    if set(modes) != set(MODES):
        cmd += " --mode " + ",".join(modes)
    seeds = p["seed"] if isinstance(p["seed"], list) else [p["seed"]]
    if seeds != [0]:
        cmd += " --seeds " + ",".join(map(str, seeds))
    if "ablation" in p:
        cmd += " --ablation"
    how = f"`{cmd}`"
    if len(seeds) > 1:
        worst = max(r.get("std_ndcg@10", 0.0) for r in p["records"])
        how += (f": every number is the mean over {len(seeds)} training seeds (the largest std of an nDCG@10 "
                f"over seeds is {worst:.4f}; each seed's numbers: `{rel.removesuffix('.json')}.md`)")
    if p.get("parts"):
        how += (f", run as {len(p['parts'])} parts merged with `--merge` (how: "
                f"`{rel.removesuffix('.json')}.md`)")
    out = f"{how}\n{_machine(p['machine'])}\n\n" + quality_tables(p["records"])
    goals = quality_targets(p["records"])
    if goals:
        out += "\n\nGoals, in nDCG@10 points (smec minus the baseline named):\n\n" + goals
    if "ablation" in p:
        out += (f"\n\nAblation (the paper's Table 1 layout), nDCG@10, {p['ablation']['mode']}:\n\n"
                + ablation_table(p["ablation"]["rows"]))
    return out


def render_speed(p: dict, rel: str) -> str:
    from smec_index.report import markdown_table

    res = p["result"]
    settings: dict[str, list[str]] = {}
    for r in res["records"]:
        settings.setdefault(r["engine"], [])
        s = json.dumps(r["setting"], sort_keys=True)
        if s not in settings[r["engine"]]:
            settings[r["engine"]].append(s)
    middle = {e: v[len(v) // 2] for e, v in settings.items()}  # settings come in increasing order
    ndcg = {(x["engine"], x["dim"], x["rerank"]): x["ndcg@10"] for x in p.get("scifact_ndcg", [])}
    rows = []
    for r in res["records"]:
        if json.dumps(r["setting"], sort_keys=True) != middle[r["engine"]]:
            continue
        setting = ", ".join(f"{k}={v}" for k, v in r["setting"].items()) or "-"
        nd = ndcg.get((r["engine"], r["dim"], r["rerank"]))
        rows.append([r["engine"], r["dim"], r["rerank"], setting, f"{r['ram_index']:.0f} / {r['ram_full']:.0f}",
                     f"{r['qps_b1000']:,.0f}", f"{r['qps_b1']:,.0f}", f"{r['recall@10']:.3f}",
                     "-" if nd is None else f"{nd:.4f}"])
    targets = "\n".join(f"- {'met' if t['met'] else 'not met'}: {t['target']}: {t['value']}" for t in p["targets"])
    load = f"; load average {p['load_start']} at start, {p['load_end']} at end" if "load_start" in p else ""
    command = p.get("command") or f"OMP_WAIT_POLICY=PASSIVE python benchmarks/speed.py --n {res['n']}"
    return (f"`{command}`: {res['n']:,} x {p['D']} "
            f"({p['data']}); compressor {p['method']}; k={p['k']}, rerank of {p['candidates']} candidates; "
            f"{_commit(p)}.\n"
            f"{_machine(p['machine'], load)}\n\n"
            + markdown_table(["engine", "dim", "rerank", "setting", "RAM B/vec (index / +full)", "QPS batch 1000",
                              "QPS batch 1", "recall@10 vs exact full", "SciFact nDCG@10"], rows)
            + f"\n\nTargets:\n\n{targets}")


def render_qdrant(p: dict, rel: str) -> str:
    from smec_index.report import markdown_table

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from qdrant import CLASSIC, frontier, frontier_table

    command = p.get("command") or f"python benchmarks/qdrant.py --method {p['method']} --runs {p['runs']}"
    parts = [f"`{command}`: k={p['k']}, median of {p['runs']} rounds; {_commit(p)}.\n{_machine(p['machine'])}"]
    for ds in p["datasets"]:
        rows = [[r["label"], r["code_b_per_pt"], f"{r['recall@10']:.3f}",
                 "-" if r.get("ndcg@10") is None else f"{r['ndcg@10']:.4f}", f"{r['qps_b1']:,.0f}",
                 f"{r['cpu_ms_b1']:.3f}", f"{r['disk_b_per_pt']:,.0f}"] for r in ds["records"] if r["config"] in CLASSIC]
        exact = ds.get("exact_ndcg@10")
        head = f"{ds['dataset']}: {ds['n']:,} points, {ds['d']} dims, {ds['queries']} queries" + (
            f", exact full-dim nDCG@10 {exact:.4f}" if exact is not None else "")
        part = head + ("\n\n" + markdown_table(["configuration", "code B/point", "recall@10", "nDCG@10",
                                                 "QPS batch 1", "CPU ms/query", "disk B/point"], rows) if rows else "")
        if frontier(ds):
            part += "\n\nPer byte against Qdrant's quantization of the full vector (re-scoring as many points):\n\n" \
                    + frontier_table(ds)
        parts.append(part)
    return "\n\n".join(parts)


def render_scale(p: dict, rel: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scale import report

    cmd = f"`{p['command']}`"
    body = report(p).split("\n", 1)[1].strip().replace("\n## ", "\n### ")  # without its title; headings one level down
    return cmd + "\n\n" + body


def render_text(p: dict, rel: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from text import render

    body = render(p).split("\n", 1)[1].strip()  # without its title; headings one level down
    return body.replace("\n## ", "\n### ")


def render_bytes(p: dict, rel: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bytes import report

    return report(p) + f"\n\nAll rows: [{Path(rel).with_suffix('.md').name}](../{Path(rel).with_suffix('.md').as_posix()})."


def render_code_choice(p: dict, rel: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from code_choice import report

    return report(p)


def render_default_stage(p: dict, rel: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from default_stage import report

    return report(p)


RENDERERS: dict[str, Callable[[dict, str], str]] = {"demo": render_demo, "demo_summary": render_demo_summary,
                                                   "quality": render_quality, "speed": render_speed,
                                                   "qdrant": render_qdrant, "scale": render_scale,
                                                   "bytes": render_bytes, "code_choice": render_code_choice,
                                                   "default_stage": render_default_stage, "text": render_text}


def regenerate(text: str) -> str:
    """``text`` with every generated block re-rendered from its JSON."""
    def sub(m: re.Match) -> str:
        kind, rel = m.group(2), m.group(3)
        payload = json.loads((ROOT / rel).read_text(encoding="utf-8"))
        return m.group(1) + RENDERERS[kind](payload, rel) + "\n" + m.group(5)
    return GENERATED.sub(sub, text)


def _git(*argv: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- tests
MD_FILES = sorted(DOCS.glob("*.md"))
GENERATED_IN = [ROOT / "README.md", *MD_FILES]  # files whose generated blocks are checked
DEMO_JSON = RESULTS / "demo-scifact-all-MiniLM-L6-v2.json"
# the code whose change invalidates the committed demo numbers (re-run: smec-index demo --out DIR, copy demo.json)
DEMO_SOURCES = ["smec_index/demo.py", "smec_index/compressor", "smec_index/quality.py", "smec_index/data",
                "smec_index/metrics.py"]


@pytest.mark.parametrize("path", MD_FILES, ids=lambda p: p.name)
def test_code_blocks_run(path, tmp_path, monkeypatch, capsys):
    from smec_index.cli import main

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs.{path.stem}"}
    for lang, code, line in code_blocks(path):
        where = f"{path.name}:{line}"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)
        elif lang == "bash":
            for cmd in bash_commands(code):
                argv = shlex.split(cmd)
                assert argv[0] == "smec-index", f"{where}: bash blocks in docs hold smec-index commands only: {cmd!r}"
                assert main(argv[1:]) == 0, f"{where}: {cmd!r} failed: {capsys.readouterr().err}"
        else:
            assert lang in NOT_CODE, f"{where}: unknown block language {lang!r}; use python, bash or text"
    capsys.readouterr()


def test_every_doc_runs_something_or_is_prose():
    langs = {p.name: {lang for lang, _, _ in code_blocks(p)} for p in MD_FILES}
    for name in ("cli.md", "architecture.md", "faiss.md", "qdrant.md"):
        assert langs[name] & set(RUN), f"{name} shows no runnable example"


@pytest.mark.parametrize("path", [p for p in GENERATED_IN if GENERATED.search(p.read_text(encoding="utf-8"))],
                         ids=lambda p: p.name)
def test_generated_tables_match_their_json(path):
    text = path.read_text(encoding="utf-8")
    for m in GENERATED.finditer(text):
        assert (ROOT / m.group(3)).is_file(), f"{path.name} shows {m.group(3)}, which does not exist"
    assert regenerate(text) == text, f"{path.name} is out of date with benchmarks/results: run python tests/test_docs.py --update"


def test_renderers_on_a_bench_payload(tmp_path, capsys):
    """The quality renderer (for results not committed yet) on what ``smec-index bench`` writes."""
    from conftest import write_toy_beir
    from smec_index.cli import main

    data = write_toy_beir(tmp_path / "beir", n_docs=30, n_queries=10, dim=16)
    assert main(["bench", "--data", str(data), "--model", "toy", "--methods", "pca,truncate", "--dims", "8,4",
                 "--json", str(tmp_path / "q.json"), "--quiet"]) == 0
    payload = json.loads((tmp_path / "q.json").read_text())
    text = render_quality(payload, "q.json")
    assert text.startswith(f"`python benchmarks/quality.py --data {data} --model toy --dims 8,4 --methods pca,truncate`")
    pca = next(r for r in payload["records"] if (r["method"], r["dim"], r["mode"]) == ("pca", 8, "supervised"))
    assert f"| pca | - | {pca['ndcg@10']:.4f} |" in text and "nDCG@10, supervised" in text
    capsys.readouterr()


def _provenance(payload: dict) -> dict:
    """The commit, dirty flag and command of a results JSON, wherever its writer put them (``with_provenance``
    at the top, quality / train-time / threads runs in ``machine``, the demo in ``provenance``)."""
    for where in (payload, payload.get("provenance") or {}, payload.get("machine") or {}):
        if where.get("commit"):
            return {"commit": where["commit"], "dirty": where.get("dirty"),
                    "command": where.get("command") or where.get("command_line")}
    return {"commit": None, "dirty": None, "command": None}


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_result_records_a_clean_commit_on_heads_history(path):
    """A published number names the commit that produced it, from a clean tree, on HEAD's history."""
    prov = _provenance(json.loads(path.read_text(encoding="utf-8")))
    assert prov["commit"], f"{path.name} records no git commit"
    assert prov["dirty"] is False, f"{path.name} was produced by a tree with uncommitted changes ({prov['dirty']!r})"
    assert prov["command"], f"{path.name} records no command line"
    head = _git("rev-parse", "--is-shallow-repository")
    if head is None or head.returncode != 0 or head.stdout.strip() == "true":
        pytest.skip("no full git history here to check the commit against")
    known = _git("cat-file", "-e", f"{prov['commit']}^{{commit}}")
    assert known is not None and known.returncode == 0, f"{path.name}: commit {prov['commit'][:10]} is not in this repository"
    ancestor = _git("merge-base", "--is-ancestor", prov["commit"], "HEAD")
    assert ancestor is not None and ancestor.returncode == 0, \
        f"{path.name}: commit {prov['commit'][:10]} is not on HEAD's history"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", [ROOT / "README.md", *MD_FILES], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"


def test_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in MD_FILES if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_docs.py --update   (re-render the generated tables in docs/)")
    sys.path.insert(0, str(ROOT))
    for p in GENERATED_IN:
        old = p.read_text(encoding="utf-8")
        new = regenerate(old)
        if new != old:
            p.write_text(new, encoding="utf-8")
            print(f"updated {p.relative_to(ROOT)}")


# ----------------------------------------------------------------------------- where the numbers come from
def test_demo_numbers_come_from_a_clean_run_of_an_ancestor_of_head():
    """The committed demo JSON was produced by a clean checkout at a commit of this history, and nothing that
    produces its numbers changed since (else: re-run the demo, commit its JSON, run test_docs.py --update)."""
    prov = json.loads(DEMO_JSON.read_text(encoding="utf-8"))["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"] or "") and prov["dirty"] is False, prov
    head = _git("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        pytest.skip("not a git checkout: the demo JSON's commit cannot be checked")
    known = _git("cat-file", "-e", f"{prov['commit']}^{{commit}}")
    if known.returncode != 0:
        pytest.skip(f"commit {prov['commit'][:10]} is not in this clone (shallow?)")
    assert _git("merge-base", "--is-ancestor", prov["commit"], "HEAD").returncode == 0, \
        f"demo JSON made at {prov['commit'][:10]}, which is not an ancestor of HEAD"
    changed = _git("diff", "--name-only", prov["commit"], "HEAD", "--", *DEMO_SOURCES).stdout.split()
    assert not changed, f"{changed} changed since the demo JSON's commit {prov['commit'][:10]}: re-run the demo"


def test_readme_and_cli_md_quote_the_demo_json():
    """README and docs/cli.md show the demo's numbers only through generated blocks of the committed JSON."""
    rel = DEMO_JSON.relative_to(ROOT).as_posix()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert f"<!-- generated: demo_summary {rel} -->" in readme and f"<!-- generated: demo {rel} -->" in cli
    for name, text in (("README.md", readme), ("cli.md", cli)):
        prose = GENERATED.sub("", text)
        for m in re.finditer(r"\b\d+(?:\.\d+)? ?(?:s|min|ms|QPS|minutes?)\b(?! (?:of|per) )", prose):
            line = prose[: m.start()].count("\n") + 1
            assert re.search(r"under|at most|less than", prose[max(0, m.start() - 20): m.start()]), \
                f"{name}: '{m.group(0)}' (line ~{line} outside generated blocks) is a timing not from the demo JSON"


TIMING = re.compile(r"(\d+(?:\.\d+)?)(?: to (\d+(?:\.\d+)?))? (ms|s)\b")


def _numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def test_text_md_timings_come_from_its_results():
    """Every timing in docs/text.md's prose and tables (N ms, N s, N to M s) is a value of text.json or
    text-100k.json at the precision shown."""
    values = [v for f in ("text.json", "text-100k.json") for v in _numbers(json.loads((RESULTS / f).read_text()))]
    text = (DOCS / "text.md").read_text(encoding="utf-8")
    text = FENCE.sub("", text)  # example outputs are pictures of a terminal, not measurements
    for m in TIMING.finditer(text):
        for shown in filter(None, m.group(1, 2)):
            places = len(shown.split(".")[1]) if "." in shown else 0
            assert any(f"{v:.{places}f}" == shown for v in values), \
                f"text.md: {m.group(0)!r} is not a number of benchmarks/results/text*.json"
    cost = text[text.index("## Cost"):]
    for row in re.findall(r"^\|(?!---)(.*)\|$", cost, re.M):
        for shown in re.findall(r"(?<![\w.])(\d+\.\d+)(?![\w.])", row):
            assert any(f"{v:.{len(shown.split('.')[1])}f}" == shown for v in values), \
                f"text.md table cell {shown} is not a number of benchmarks/results/text*.json"


def test_readme_use_snippet_runs_as_written(tmp_path, monkeypatch):
    """README's "Use" example is self-contained: it runs as pasted, in a fresh directory."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use"):]
    section = section[: section.index("\n## ", 1)]
    blocks = [code for lang, code in FENCE.findall(section) if lang == "python"]
    assert len(blocks) == 1, "README's Use section should hold one python block"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md (Use)", "exec"), {"__name__": "readme"})
    assert (tmp_path / "model_dir" / "config.json").is_file()


def test_skipped_real_data_is_announced():
    from conftest import realdata_notice

    reasons = ["real data not found at /nowhere/scifact", "real data not found", "needs qdrant"]
    notice = realdata_notice(reasons, Path("/nowhere/scifact"))
    assert notice.startswith("2 real-data tests SKIPPED: no SciFact data at /nowhere/scifact")
    assert realdata_notice(["needs qdrant"], Path("/x")) is None
