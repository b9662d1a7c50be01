"""Stimulus sets: the paper's four experiments as versioned, validated tables.

A stimulus set is a :class:`pandas.DataFrame` with one row per stimulus:

``text``    the input fed to the model (non-empty str)
``target``  the word to pool over (str) or several words (list of str); each must
            occur in ``text`` as a whole word (first occurrence is used, see
            :func:`probekit.core.text.find_word`)
``group``   the cross-validation group (str): rows sharing a group are never split
            between train and test folds
label columns   binary (int 0/1) or continuous (float on a declared scale)
metadata        anything else (``n_letters``, ``zipf``, ``relation_type`` ...)

and ``df.attrs`` holding ``name``, ``version``, ``hash``, ``pooling``,
``description``, ``labels`` (per label: ``kind``, ``role``, ``group``, ``scale``,
``range``, ``description``, ``provenance``, optional ``optional`` and
``min_class_fraction``) and ``checks`` (set-level checks, see :data:`DEFAULT_CHECKS`).

On disk a set is a CSV (or parquet) file plus a JSON sidecar with the same stem
(``items.csv`` + ``items.json``). In CSV, several target words are written
``church|organ``. See ``stimuli/README.md`` for the format.

Public API: :func:`names`, :func:`load`, :func:`load_file`, :func:`save`,
:func:`validate`, :class:`StimulusError`, :func:`indefinite_article`.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.core.activations import POOLINGS
from probekit.core.atomic import atomic_file, atomic_write_text
from probekit.core.hashing import frame_hash
from probekit.studies import data_dir
from probekit.core.text import as_targets, find_word, missing_word_advice

#: Where the shipped sets live: the default study's ``stimuli/`` folder (package data); override with the
#: environment variable PROBEKIT_STIMULI_DIR.
STIMULI_DIR = Path(os.environ.get("PROBEKIT_STIMULI_DIR") or data_dir("stimuli"))


def _shipped_names(directory: Path = STIMULI_DIR) -> tuple[str, ...]:
    """The sets in ``directory``: every ``<name>.csv`` with its ``<name>.json`` sidecar."""
    return tuple(sorted(p.stem for p in Path(directory).glob("*.csv") if p.with_suffix(".json").is_file()))


#: The shipped sets (files ``<STIMULI_DIR>/<name>.csv`` + ``<name>.json``), found on disk: the core names none.
SET_NAMES = _shipped_names()

TARGET_SEP = "|"
REQUIRED_COLUMNS = ("text", "target", "group")
LABEL_KINDS = ("binary", "continuous")
LABEL_ROLES = ("semantic", "surface", "control")

#: Set-level checks applied by :func:`validate` unless the set's ``checks`` override them.
DEFAULT_CHECKS = {
    "n_folds": 6,                 # every label needs >= n_folds distinct groups
    "min_class_fraction": 0.30,   # binary labels: minority class share (per label overridable)
    "disjoint_words_across_groups": False,  # True: no target word may occur in two groups
    "check_articles": True,       # "a"/"an" must match the next word's sound
    "word_count": None,           # [lo, hi]: words per text (buried set)
    "unique_text": True,          # no two rows with the same text
}

# --------------------------------------------------------------------------- articles
#: Words spelled with a vowel letter but pronounced with a consonant sound: "a unicorn".
A_EXCEPTIONS = {
    "unicorn", "unicycle", "uniform", "unit", "union", "unique", "universe", "university",
    "unison", "ukulele", "utensil", "user", "usual", "useful", "utopia", "urinal", "uranium",
    "ewe", "eucalyptus", "euro", "european", "eulogy", "one", "once", "ouija",
}
#: Words spelled with a consonant letter but pronounced with a vowel sound: "an hour".
AN_EXCEPTIONS = {
    "hour", "hourglass", "hourly", "honest", "honestly", "honor", "honour", "honorable",
    "honourable", "heir", "heiress", "heirloom",
}
#: Either article is acceptable (regional pronunciation differences).
EITHER_ARTICLE = {"herb", "herbal", "historic", "historical"}


def indefinite_article(word: str) -> str:
    """'a' or 'an' for ``word``, by sound (uses the exception lists above)."""
    w = word.strip().lower()
    if not w:
        raise ValueError("empty word")
    if w in AN_EXCEPTIONS:
        return "an"
    if w in A_EXCEPTIONS or w.startswith(("eu", "ewe", "uni")) and w not in {"unimportant", "uninvited", "unintended"}:
        return "a"
    return "an" if w[0] in "aeiou" else "a"


def with_article(word: str, capital: bool = True) -> str:
    """'An apple' / 'A unicorn' (``capital=False``: 'an apple')."""
    art = indefinite_article(word)
    return f"{art.capitalize() if capital else art} {word}"


_ARTICLE_RE = re.compile(r"(?<![\w'])([Aa]n?)\s+([A-Za-z][\w-]*)")


def article_errors(text: str) -> list[tuple[str, str]]:
    """[(found 'a'/'an' phrase, expected article)] for every wrong indefinite article in ``text``."""
    out = []
    for m in _ARTICLE_RE.finditer(text):
        art, word = m.group(1).lower(), m.group(2)
        if word.lower().strip("-") in EITHER_ARTICLE:
            continue
        if len(word) == 1 or word.isupper():  # "a B", "an FBI agent": letters/acronyms not checked
            continue
        want = indefinite_article(word)
        if art != want:
            out.append((m.group(0), want))
    return out


# --------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class Problem:
    row: object          # row index label (None for set-level problems)
    text: str | None     # the stimulus text
    word: str | None     # the word / column concerned
    what: str            # what is wrong
    fix: str             # what to do

    def __str__(self):
        where = "set" if self.row is None else f"row {self.row!r}"
        parts = [where]
        if self.text is not None:
            t = self.text if len(self.text) <= 80 else self.text[:77] + "..."
            parts.append(f"text={t!r}")
        if self.word is not None:
            parts.append(f"word={self.word!r}")
        return f"{' '.join(parts)}: {self.what} -> {self.fix}"


class StimulusError(ValueError):
    """A stimulus set failed validation; ``.problems`` lists every problem found."""

    def __init__(self, problems, name=None):
        self.problems = list(problems)
        head = f"stimulus set {name!r}" if name else "stimulus set"
        lines = [f"{head}: {len(self.problems)} problem(s):"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- helpers
def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:
        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


def _targets(v) -> list[str]:
    if _is_missing(v):
        return []
    if isinstance(v, np.ndarray):
        v = v.tolist()
    return as_targets(v)


def _norm_target(v):
    """Canonical target cell: str for one word, list of str for several."""
    if _is_missing(v):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        words = [str(w) for w in (v.tolist() if isinstance(v, np.ndarray) else v)]
        return words[0] if len(words) == 1 else words
    if isinstance(v, str) and TARGET_SEP in v:
        return as_targets(v)
    return v


def content_hash(df: pd.DataFrame) -> str:
    """The set's content hash: :func:`probekit.core.hashing.frame_hash` over all columns, sorted by name."""
    return frame_hash(df, sorted(df.columns))


def _label_range(spec):
    r = spec.get("range")
    if spec.get("kind") == "binary":
        return (0, 1)
    return tuple(r) if r is not None else None


# --------------------------------------------------------------------------- validation
def validate(df: pd.DataFrame, labels: dict | None = None, checks: dict | None = None,
             name: str | None = None) -> pd.DataFrame:
    """Check a stimulus set; raise :class:`StimulusError` listing EVERY problem at once.

    ``labels`` / ``checks`` default to ``df.attrs['labels']`` / ``df.attrs['checks']``.
    Returns ``df`` unchanged when it is valid. The checks, in the order their problems are listed: the
    columns and label declarations (:func:`_declaration_problems`; a missing required column stops here),
    each row (:func:`_row_problems`), duplicate texts, CV groups and class balance per label
    (:func:`_label_set_problems`), words shared across CV groups (:func:`_shared_word_problems`).
    """
    labels = labels if labels is not None else df.attrs.get("labels", {})
    chk = dict(DEFAULT_CHECKS)
    chk.update(checks if checks is not None else df.attrs.get("checks", {}) or {})
    name = name or df.attrs.get("name")
    problems = list(_declaration_problems(df, labels))
    if any(c not in df.columns for c in REQUIRED_COLUMNS):
        raise StimulusError(problems, name)
    for idx, row in df.iterrows():
        problems += _row_problems(idx, row, labels, chk)
    problems += _duplicate_problems(df, chk)
    problems += _label_set_problems(df, labels, chk)
    problems += _shared_word_problems(df, chk)
    if problems:
        raise StimulusError(problems, name)
    return df


def _declaration_problems(df: pd.DataFrame, labels: dict):
    """The required columns, the pooling and every label's declaration (kind, role, range, group column)."""
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            near = [k for k in df.columns if isinstance(k, str) and k != c and k.strip().lower() == c]
            if near:                    # 'text, target' in a CSV header: the column is ' target'
                yield Problem(None, None, c, f"required column {c!r} is missing; there is a column {near[0]!r}",
                              f"rename {near[0]!r} to {c!r} (no spaces around the names in the header)")
            else:
                yield Problem(None, None, c, f"required column {c!r} is missing",
                              f"add a {c!r} column (required: {', '.join(REQUIRED_COLUMNS)})")
    if not labels:
        yield Problem(None, None, None, "no labels declared",
                      "declare at least one label column in the sidecar JSON 'labels' (kind, role, scale, range)")
    pooling = df.attrs.get("pooling")
    if pooling is not None and pooling not in POOLINGS:
        yield Problem(None, None, "pooling", f"unknown pooling {pooling!r}", f"use one of {POOLINGS}")
    for col, spec in labels.items():
        if col not in df.columns:
            yield Problem(None, None, col, f"declared label column {col!r} is missing",
                          "add the column or remove the declaration")
            continue
        if spec.get("kind") not in LABEL_KINDS:
            yield Problem(None, None, col, f"label kind {spec.get('kind')!r} is not one of {LABEL_KINDS}",
                          "fix 'kind' in the sidecar")
        if spec.get("role", "semantic") not in LABEL_ROLES:
            yield Problem(None, None, col, f"label role {spec.get('role')!r} is not one of {LABEL_ROLES}",
                          "fix 'role' in the sidecar")
        if spec.get("kind") == "continuous" and spec.get("range") is None:
            yield Problem(None, None, col, "continuous label has no 'range'",
                          "add \"range\": [lo, hi] to the label in the sidecar")
        g = spec.get("group", "group")
        if g not in df.columns:
            yield Problem(None, None, col, f"label's CV group column {g!r} is missing",
                          "add the column or fix the label's 'group'")


def _row_problems(idx, row, labels: dict, chk: dict) -> list[Problem]:
    """One row: its text (:func:`_text_problems`), target words, CV group and label values."""
    text = row["text"]
    text_ok = isinstance(text, str) and bool(text.strip())
    shown = text if text_ok else None                         # the text to show beside a problem
    if not text_ok:
        out = [Problem(idx, None if _is_missing(text) else str(text), None, "empty or missing text",
                       "give every stimulus a non-empty text")]
    else:
        out = _text_problems(idx, text)
    words = _targets(row["target"])
    if not words:
        out.append(Problem(idx, shown, None, "no target word",
                           "give the word(s) to pool over (several: a list, or 'w1|w2' in CSV)"))
    elif text_ok:
        out += [Problem(idx, text, w, "target word does not occur in the text as a whole word",
                        missing_word_advice(text, w)) for w in words if find_word(text, w) is None]
    grp = row["group"]
    if _is_missing(grp) or (isinstance(grp, str) and not grp.strip()):
        out.append(Problem(idx, shown, "group", "missing CV group", "give every row a group (str)"))
    if text_ok:
        out += _style_problems(idx, text, chk)
    for col, spec in labels.items():
        if col in row.index:
            out += _label_value_problems(idx, shown, col, spec, row[col])
    return out


def _text_problems(idx, text: str) -> list[Problem]:
    """A non-empty text's whitespace."""
    if text != text.strip() or "  " in text:
        return [Problem(idx, text, None, "text has leading/trailing or doubled whitespace", "normalise the whitespace")]
    return []


def _style_problems(idx, text: str, chk: dict) -> list[Problem]:
    """A text's indefinite articles (``checks.check_articles``) and word count (``checks.word_count``)."""
    out = []
    if chk.get("check_articles", True):
        for found, want in article_errors(text):
            out.append(Problem(idx, text, found.split()[-1], f"wrong indefinite article in {found!r}",
                               f"use {want!r}; if the word is a pronunciation exception, add it to "
                               f"probekit.stimuli.sets.{'A' if want == 'an' else 'AN'}_EXCEPTIONS or set "
                               f"checks.check_articles=false"))
    wc = chk.get("word_count")
    if wc:
        n = len(text.split())
        if not (wc[0] <= n <= wc[1]):
            out.append(Problem(idx, text, None, f"text has {n} words, outside [{wc[0]}, {wc[1]}]",
                               "lengthen/shorten the filler or change checks.word_count"))
    return out


def _label_value_problems(idx, shown, col: str, spec: dict, v) -> list[Problem]:
    """One label value: present unless optional, a number, 0/1 for a binary label, within a declared range."""
    if _is_missing(v):
        if spec.get("optional", False):
            return []
        return [Problem(idx, shown, col, "missing (NaN) value in a required label",
                        "fill it in, or declare the label \"optional\": true in the sidecar")]
    try:
        fv = float(v)
    except (TypeError, ValueError):
        return [Problem(idx, shown, col, f"label value {v!r} is not a number", "use a number")]
    if spec.get("kind") == "binary":
        if fv not in (0.0, 1.0):
            return [Problem(idx, shown, col, f"binary label value {v!r} is not 0 or 1", "use int 0/1")]
        return []
    rng = _label_range(spec)
    if rng and not (rng[0] <= fv <= rng[1]):
        return [Problem(idx, shown, col, f"value {v!r} outside its scale [{rng[0]}, {rng[1]}] ({spec.get('scale', '')})",
                        "fix the value or the declared range")]
    return []


def _duplicate_problems(df: pd.DataFrame, chk: dict) -> list[Problem]:
    """Texts that occur twice (``checks.unique_text``): every copy after the first."""
    if not chk.get("unique_text", True):
        return []
    out = []
    texts = df["text"].astype(str)
    dup = texts[texts.duplicated(keep=False)]
    for t, idxs in dup.groupby(dup).groups.items():
        idxs = list(idxs)
        out += [Problem(i, t, None, f"duplicate text (same as row {idxs[0]!r})", "remove or change one of the duplicates")
                for i in idxs[1:]]
    return out


def _label_set_problems(df: pd.DataFrame, labels: dict, chk: dict) -> list[Problem]:
    """Per label: enough CV groups for the folds (``checks.n_folds``), a binary label's minority class."""
    out = []
    n_folds = int(chk.get("n_folds", 6))
    for col, spec in labels.items():
        gcol = spec.get("group", "group")
        if col not in df.columns or gcol not in df.columns:
            continue
        sub = df[~df[col].map(_is_missing)]
        ng = sub[gcol].nunique()
        if ng < n_folds:
            out.append(Problem(None, None, col, f"only {ng} distinct CV groups ({gcol!r}) for {n_folds}-fold CV",
                               f"use at least {n_folds} groups"))
        values = pd.to_numeric(sub[col], errors="coerce").dropna()     # a non-number is a row problem above
        if spec.get("kind") == "binary" and len(values):
            frac = float(values.mean())
            minority = min(frac, 1 - frac)
            bound = spec.get("min_class_fraction", chk.get("min_class_fraction", 0.3))
            if minority < bound:
                out.append(Problem(None, None, col, f"class imbalance: minority class is {minority:.1%} (< {bound:.0%})",
                                   "rebalance the classes or lower min_class_fraction for this label in the sidecar"))
    return out


def _shared_word_problems(df: pd.DataFrame, chk: dict) -> list[Problem]:
    """No target word in two CV groups (``checks.disjoint_words_across_groups``: analogies, relations)."""
    if not chk.get("disjoint_words_across_groups"):
        return []
    out = []
    seen: dict[str, tuple[object, object]] = {}
    for idx, row in df.iterrows():
        for w in _targets(row["target"]):
            key = w.lower()
            if key in seen and seen[key][0] != row["group"]:
                out.append(Problem(idx, row["text"], w,
                                   f"word occurs in two CV groups ({seen[key][0]!r} at row {seen[key][1]!r} and "
                                   f"{row['group']!r})",
                                   "merge the groups (connected components of shared words) so a word family stays "
                                   "in one fold"))
            else:
                seen.setdefault(key, (row["group"], idx))
    return out


# --------------------------------------------------------------------------- I/O
def _sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _decode_csv(path: Path, problems: list) -> str:
    """The file's text; every line with bytes that are not UTF-8 is reported (line, byte offset, the bytes)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    offset = 0
    n_bad = 0
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            n_bad += 1
            if n_bad <= 20:
                bad = line[exc.start:exc.end]
                problems.append(Problem(
                    lineno - 2 if lineno > 1 else None, line.decode("utf-8", "replace").strip(), None,
                    f"{path.name}: bytes {bad!r} at byte {offset + exc.start} (line {lineno}, column "
                    f"{exc.start + 1}) are not UTF-8",
                    "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8, or 'CSV UTF-8' in a spreadsheet)"))
        offset += len(line) + 1
    if n_bad > 20:
        problems.append(Problem(None, None, None, f"{path.name}: {n_bad - 20} more lines are not UTF-8",
                                "save the file as UTF-8"))
    return raw.decode("utf-8", "replace")


def _read_table(path: Path, list_columns, problems: list | None = None) -> pd.DataFrame | None:
    """Read a CSV/parquet stimulus table. With ``problems``, parsing problems (encoding, an empty file,
    a target that is not text) are appended there (None is returned when nothing could be read);
    without it the first one raises :class:`StimulusError`."""
    collect = problems if problems is not None else []
    df = _read_raw(path, collect)
    if df is not None:
        _normalise_columns(df, list_columns, collect)
    if problems is None and collect:
        raise StimulusError(collect)
    return df


def _read_raw(path: Path, problems: list) -> pd.DataFrame | None:
    import io
    suffix = path.suffix.lower()
    if suffix == ".csv":
        kw = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
        text = _decode_csv(path, problems)
        if not text.strip():
            problems.append(Problem(None, None, None, f"{path.name} is empty (no header, no rows)",
                                    f"write a header line ({', '.join(REQUIRED_COLUMNS)}, then your label "
                                    f"columns) and one row per stimulus"))
            return None
        try:
            df = pd.read_csv(io.StringIO(text), dtype={"text": str, "target": str, "group": str},
                             keep_default_na=False, na_values=[""], **kw)
        except (pd.errors.ParserError, ValueError) as exc:
            problems.append(Problem(None, None, None, f"{path.name}: not a readable CSV ({exc})",
                                    "check the quoting and the number of fields per line"))
            return None
    elif suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:                     # pyarrow raises its own error types
            problems.append(Problem(None, None, None, f"{path.name}: not a readable parquet file ({exc})",
                                    "write it with pandas.DataFrame.to_parquet, or use CSV"))
            return None
    else:
        problems.append(Problem(None, None, None, f"unsupported file type {suffix!r} ({path})", "use .csv or .parquet"))
        return None
    if len(df) == 0:
        problems.append(Problem(None, None, None, f"{path.name} has a header but no rows "
                                f"(columns: {', '.join(map(str, df.columns))})", "add one row per stimulus"))
        return None
    return df


def _normalise_columns(df: pd.DataFrame, list_columns, problems: list) -> None:
    if "target" in df.columns:
        def target(idx, v):
            if _is_missing(v) or isinstance(v, (str, list, tuple, np.ndarray)):
                return _norm_target(v)
            problems.append(Problem(idx, df.at[idx, "text"] if "text" in df.columns else None, "target",
                                    f"target {v!r} is a {type(v).__name__}, not a word",
                                    "give the target word(s) as text: a string, a list of strings, or "
                                    "'w1|w2' in CSV"))
            return str(v)
        df["target"] = pd.Series([target(i, v) for i, v in df["target"].items()], index=df.index, dtype=object)
    for c in list_columns:
        if c in df.columns and c != "target":
            df[c] = df[c].map(lambda v: as_targets(v) if isinstance(v, str) else
                              (v.tolist() if isinstance(v, np.ndarray) else v)).astype(object)
    if "group" in df.columns:
        df["group"] = df["group"].map(lambda g: g if _is_missing(g) or isinstance(g, str) else str(g))


_YES_NO = {"yes", "no", "y", "n", "true", "false", "t", "f"}


def _coerce_labels(df: pd.DataFrame, labels: dict, problems: list) -> set:
    """Declared label columns as numbers. Every value that is not a number is reported (row, value, how to
    encode it) and set to NaN, so no row is dropped silently; returns the (row, column) pairs reported."""
    reported = set()
    for col, spec in labels.items():
        if col not in df.columns or pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            continue
        values = []
        bad = []
        for idx, v in df[col].items():
            if _is_missing(v):
                values.append(np.nan)
                continue
            try:
                values.append(float(v.strip() if isinstance(v, str) else v))
            except (TypeError, ValueError):
                values.append(np.nan)
                bad.append((idx, v))
        words = {str(v).strip().lower() for _, v in bad}
        if words and words <= _YES_NO:
            fix = ("encode the label as numbers: 1 for yes/true, 0 for no/false" if spec.get("kind") == "binary"
                   else "use a number on the label's declared scale")
        else:
            fix = "use 0/1 for a binary label" if spec.get("kind") == "binary" else \
                f"use a number in the declared range {spec.get('range')}"
        for idx, v in bad:
            text = df.at[idx, "text"] if "text" in df.columns else None
            problems.append(Problem(idx, text if isinstance(text, str) else None, col,
                                    f"label value {v!r} is not a number ({len(bad)} such rows in {col!r})", fix))
            reported.add((idx, col))
        df[col] = pd.Series(values, index=df.index, dtype="float64")
    return reported


def _read_sidecar(side: Path, problems: list) -> dict | None:
    """The sidecar's dictionary ({} when there is none); None (and a problem naming the position) when it
    is not valid JSON or not a JSON object."""
    if not side.exists():
        return {}
    try:
        raw = side.read_bytes()
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(Problem(None, None, side.name, f"sidecar {side} is not UTF-8 (byte {exc.start})",
                                "save the sidecar as UTF-8"))
        return None
    except json.JSONDecodeError as exc:
        problems.append(Problem(None, None, side.name, f"sidecar {side} is not valid JSON: {exc.msg} at line "
                                f"{exc.lineno}, column {exc.colno} (character {exc.pos})",
                                f"fix the JSON there (python -m json.tool {side} shows the error)"))
        return None
    if not isinstance(meta, dict):
        problems.append(Problem(None, None, side.name, f"sidecar {side} holds a JSON {type(meta).__name__}, "
                                f"not an object", "the sidecar is one JSON object: {\"labels\": {...}, ...}"))
        return None
    return meta


def _finish(df: pd.DataFrame, meta: dict, path: Path | None) -> pd.DataFrame:
    labels = meta.get("labels", {})
    # binary labels without NaN as int64 (with NaN they stay float)
    for col, spec in labels.items():
        if col in df.columns and spec.get("kind") == "binary" and not df[col].isna().any():
            try:
                if set(pd.unique(df[col].astype(float))) <= {0.0, 1.0}:
                    df[col] = df[col].astype("int64")
            except (TypeError, ValueError):
                pass
        elif col in df.columns and spec.get("kind") == "continuous":
            try:
                df[col] = df[col].astype("float64")
            except (TypeError, ValueError):
                pass
    attrs = {
        "name": meta.get("name") or (path.stem if path else None),
        "version": meta.get("version", "0.0.0"),
        "pooling": meta.get("pooling", "target_mean"),
        "description": meta.get("description", ""),
        "labels": labels,
        "checks": meta.get("checks", {}),
        "provenance": meta.get("provenance", ""),
    }
    df.attrs.update(attrs)
    validate(df, name=attrs["name"])
    h = content_hash(df)
    stored = meta.get("hash")
    if stored and stored != h:
        raise StimulusError([Problem(None, None, "hash",
                                     f"content hash {h[:12]}... differs from the sidecar's {stored[:12]}...: "
                                     f"the data changed without a new version",
                                     "regenerate with stimuli/build.py (bump 'version') or update the sidecar's "
                                     "'hash' (and 'version') after reviewing the change")], attrs["name"])
    df.attrs["hash"] = h
    return df


def load_file(path, sidecar=None) -> pd.DataFrame:
    """Load a user's CSV/parquet stimulus set (+ optional JSON sidecar) through :func:`validate`.

    The sidecar defaults to the file's path with suffix ``.json``. Without a sidecar,
    every numeric column other than the metadata columns ``n_letters``/``zipf``/
    ``filler_id`` is NOT treated as a label: a sidecar declaring the labels is needed.

    Every problem is collected and raised together in one :class:`StimulusError`:
    bytes that are not UTF-8 (line and byte offset), an empty or header-only file, a
    sidecar that is not valid JSON (file, line, column), targets that are not text,
    label values that are not numbers ("yes"/"no": every row listed, never dropped),
    and everything :func:`validate` checks.
    """
    path = Path(path)
    side = Path(sidecar) if sidecar is not None else _sidecar_path(path)
    if not path.is_file():
        raise StimulusError([Problem(None, None, None, f"{path} does not exist or is not a file",
                                     "give the path of a .csv or .parquet stimulus file")])
    problems: list[Problem] = []
    meta = _read_sidecar(side, problems)
    df = _read_table(path, (meta or {}).get("list_columns", []), problems)
    name = (meta or {}).get("name") or path.stem
    if df is None or meta is None:
        raise StimulusError(problems, name)
    if meta.get("columns"):
        missing = [c for c in meta["columns"] if c not in df.columns]
        if not missing:
            df = df[meta["columns"]]
    reported = _coerce_labels(df, meta.get("labels", {}) if isinstance(meta.get("labels"), dict) else {}, problems)
    try:
        out = _finish(df, meta, path)
    except StimulusError as exc:             # one error with the parsing problems and the validation's
        # drop what follows from a problem already listed: a NaN'd label value (and its column's set-level
        # counts), a target that was not text
        bad_cols = {c for _, c in reported}
        bad_targets = {p.row for p in problems if p.word == "target"}
        problems += [p for p in exc.problems if (p.row, p.word) not in reported
                     and not (p.row is None and p.word in bad_cols)
                     and not (p.row in bad_targets and "target" in p.what)]
        raise StimulusError(problems, name) from None
    if problems:
        raise StimulusError(problems, name)
    return out


def names() -> list[str]:
    """Names of the shipped stimulus sets."""
    return list(SET_NAMES)


def load(name: str) -> pd.DataFrame:
    """Load a shipped stimulus set by name (see :func:`names`)."""
    if name not in SET_NAMES:
        raise KeyError(f"unknown stimulus set {name!r}; known: {', '.join(SET_NAMES)} "
                       f"(for your own file use probekit.stimuli.sets.load_file(path))")
    return load_file(STIMULI_DIR / f"{name}.csv")


def metadata(df: pd.DataFrame) -> dict:
    """The sidecar dictionary for ``df`` (from ``df.attrs``), hash recomputed."""
    a = df.attrs
    list_cols = [c for c in df.columns if c != "target" and df[c].map(lambda v: isinstance(v, list)).any()]
    return {
        "name": a.get("name"),
        "version": a.get("version", "0.0.0"),
        "description": a.get("description", ""),
        "pooling": a.get("pooling", "target_mean"),
        "provenance": a.get("provenance", ""),
        "n_rows": int(len(df)),
        "columns": list(df.columns),
        "list_columns": list_cols,
        "target_sep": TARGET_SEP,
        "hash": content_hash(df),
        "labels": a.get("labels", {}),
        "checks": a.get("checks", {}),
    }


def save(df: pd.DataFrame, path) -> Path:
    """Write ``df`` as CSV or parquet (by suffix) plus its JSON sidecar. Validates first.

    Each file is written atomically (:mod:`probekit.core.atomic`), the sidecar last: a crash leaves the old
    pair, or the new data beside the old sidecar, whose hash :func:`load` then refuses."""
    validate(df)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = metadata(df)
    if path.suffix.lower() == ".csv":
        out = df.copy()
        for c in ["target"] + meta["list_columns"]:
            if c in out.columns:
                out[c] = out[c].map(lambda v: TARGET_SEP.join(v) if isinstance(v, (list, tuple)) else v)
        atomic_file(path, lambda tmp: out.to_csv(tmp, index=False, lineterminator="\n"))
    elif path.suffix.lower() in (".parquet", ".pq"):
        out = df.copy()
        out.attrs = {}
        # a column mixing str and list cannot go to parquet: store every target as a list there
        if "target" in out.columns:
            out["target"] = out["target"].map(lambda v: v if isinstance(v, list) else [v])
        atomic_file(path, lambda tmp: out.to_parquet(tmp, index=False))
    else:
        raise ValueError(f"unsupported file type {path.suffix!r}; use .csv or .parquet")
    atomic_write_text(_sidecar_path(path), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return path


__all__ = ["SET_NAMES", "STIMULI_DIR", "StimulusError", "Problem", "names", "load", "load_file", "save",
           "validate", "metadata", "content_hash", "indefinite_article", "with_article", "article_errors",
           "A_EXCEPTIONS", "AN_EXCEPTIONS"]


# --------------------------------------------------------------------------- WordNet cross-check
WORDNET_DIR = Path(os.environ.get("PROBEKIT_WORDNET_DIR", "/usr/share/wordnet"))

#: Feature -> WordNet noun synsets ("lemma.n.NN") whose hyponyms count as positives.
WORDNET_CATEGORIES = {
    "animal": ["animal.n.01"],
    "living": ["organism.n.01"],
    "edible": ["food.n.01", "food.n.02", "edible_fruit.n.01", "vegetable.n.01", "edible_nut.n.01"],
    "man_made": ["artifact.n.01"],
}


class WordNetNouns:
    """Minimal reader of the WordNet 3.0 noun database files (Debian ``wordnet-base``).

    nltk's ``WordNetCorpusReader`` cannot read ``/usr/share/wordnet`` directly (its path
    sandbox rejects the folder, and the Debian package lacks the ``lexnames`` file nltk
    needs), so the two files needed for hypernym closures are parsed here (format: wndb(5)).
    """

    def __init__(self, root=WORDNET_DIR):
        self.root = Path(root)
        index, data = self.root / "index.noun", self.root / "data.noun"
        if not (index.exists() and data.exists()):
            raise FileNotFoundError(f"WordNet noun files not found in {self.root}: apt-get install wordnet-base")
        self._index: dict[str, list[int]] = {}
        with open(index, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" "):
                    continue
                parts = line.split()
                n_syn = int(parts[2])
                self._index[parts[0]] = [int(o) for o in parts[-n_syn:]]
        self._data = open(data, "rb")
        self._hyper: dict[int, list[int]] = {}

    def senses(self, word: str) -> list[int]:
        """Synset offsets of ``word``'s noun senses, most frequent first."""
        return self._index.get(word.lower().replace(" ", "_"), [])

    def synset(self, name: str) -> int:
        lemma, pos, n = name.rsplit(".", 2)
        return self.senses(lemma)[int(n) - 1]

    def _hypernyms(self, off: int) -> list[int]:
        if off not in self._hyper:
            self._data.seek(off)
            fields = self._data.readline().decode("utf-8", "replace").split(" | ")[0].split()
            w_cnt = int(fields[3], 16)
            i = 4 + 2 * w_cnt
            p_cnt = int(fields[i])
            ptrs = fields[i + 1:i + 1 + 4 * p_cnt]
            self._hyper[off] = [int(ptrs[j + 1]) for j in range(0, len(ptrs), 4)
                                if ptrs[j] in ("@", "@i") and ptrs[j + 2] == "n"]
        return self._hyper[off]

    def ancestors(self, off: int) -> set[int]:
        seen, todo = {off}, [off]
        while todo:
            for h in self._hypernyms(todo.pop()):
                if h not in seen:
                    seen.add(h)
                    todo.append(h)
        return seen

    def sense_is_a(self, word: str, categories) -> list[bool]:
        """Per noun sense of ``word``: does it fall under any of ``categories`` (synset names)?"""
        cats = {self.synset(c) for c in categories}
        return [bool(self.ancestors(s) & cats) for s in self.senses(word)]


def wordnet_disagreements(df: pd.DataFrame, wn: WordNetNouns, features=None, word_col="target") -> pd.DataFrame:
    """Compare binary features with WordNet hypernyms. One row per disagreement:
    ``ours=1`` but no noun sense under the category, or ``ours=0`` but the first
    (most frequent) sense is under it. Words unknown to WordNet are reported as such."""
    out = []
    feats = [f for f in (features or WORDNET_CATEGORIES) if f in df.columns]
    for idx, row in df.iterrows():
        word = row[word_col]
        for f in feats:
            if f == "man_made" and "edible" in df.columns and row["edible"] == 1:
                continue  # our man_made includes prepared foods; WordNet files those under food, not artifact
            if f == "living" and "edible" in df.columns and row["edible"] == 1 and int(row[f]) == 0:
                continue  # our rule: harvested produce is not living; WordNet's first sense is often the plant
            senses = wn.sense_is_a(word, WORDNET_CATEGORIES[f])
            ours = int(row[f])
            if not senses:
                out.append({"row": idx, "word": word, "feature": f, "ours": ours, "wordnet": None,
                            "why": "word not in WordNet"})
            elif ours == 1 and not any(senses):
                out.append({"row": idx, "word": word, "feature": f, "ours": 1, "wordnet": 0,
                            "why": f"no noun sense under {WORDNET_CATEGORIES[f]}"})
            elif ours == 0 and senses[0]:
                out.append({"row": idx, "word": word, "feature": f, "ours": 0, "wordnet": 1,
                            "why": f"first noun sense is under {WORDNET_CATEGORIES[f]}"})
    return pd.DataFrame(out, columns=["row", "word", "feature", "ours", "wordnet", "why"])


# --------------------------------------------------------------------------- shortcut baselines
def pair_shortcut_baselines(df: pd.DataFrame, label: str = "valid", n_splits: int = 6) -> pd.DataFrame:
    """How well ``label`` of an analogy set is predicted from ONE pair alone, from the data only.

    Logistic regressions (one-hot features, 6-fold ``GroupKFold`` on the set's groups, balanced
    accuracy of the pooled out-of-fold predictions) on: the A:B relation type, the C:D relation
    type, both types additively (no interaction), the A:B words, the C:D words, and, as a positive
    control, the indicator "A:B and C:D have the same relation type". Returns one row per feature
    set: ``features``, ``balanced_accuracy``, ``n``. Needs the columns ``ab_relation``,
    ``cd_relation``, ``a``-``d`` and ``group``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    y = df[label].to_numpy()
    feats = {
        "ab_relation": pd.get_dummies(df["ab_relation"]),
        "cd_relation": pd.get_dummies(df["cd_relation"]),
        "ab_relation+cd_relation": pd.get_dummies(df[["ab_relation", "cd_relation"]]),
        "ab_words": pd.get_dummies(df[["a", "b"]]),
        "cd_words": pd.get_dummies(df[["c", "d"]]),
        "same_relation (control)": (df["ab_relation"] == df["cd_relation"]).astype(float).to_frame(),
    }
    out = []
    for name, X in feats.items():
        pred = cross_val_predict(LogisticRegression(C=1.0, max_iter=1000), X.to_numpy(float), y,
                                 groups=df["group"], cv=GroupKFold(n_splits=n_splits))
        out.append({"features": name, "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
                    "n": int(len(y))})
    return pd.DataFrame(out)
