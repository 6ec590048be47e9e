"""Labels for training: the MEGC2019 emotion classes, parsed action units, subject folds.

The MEGC2019 composite benchmark (See, J., Yap, M. H., Li, J., Hong, X. and Wang, S.-J.,
"MEGC 2019 – The Second Facial Micro-Expressions Grand Challenge", IEEE FG 2019) merges
SMIC, CASME II and SAMM into three classes: negative, positive and surprise. A dataset's
emotions map to those classes through its table in ``MEGC2019_MAPS``; an emotion outside the
table (SAMM's "Other") is not part of the benchmark. With the shipped fixes
(``sammflow.fixes``) the real SAMM file gives the paper's 133 SAMM clips: 92 negative,
26 positive, 15 surprise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

#: The MEGC2019 classes, by label index.
MEGC2019_CLASSES = ("negative", "positive", "surprise")
#: Where the class mapping comes from.
MEGC2019_SOURCE = ('See, J. et al., "MEGC 2019 – The Second Facial Micro-Expressions Grand Challenge", '
                   "IEEE FG 2019: the composite database's three classes")
#: The label of an emotion that is not part of MEGC2019.
NOT_IN_MEGC2019 = -1

_NEGATIVE, _POSITIVE, _SURPRISE = range(3)
#: Per dataset kind: its estimated emotions (lower case) → MEGC2019 class index. SAMM's
#: "Other" and CASME II's "others", "fear" and "sadness" are left out of the benchmark; SMIC's
#: classes are MEGC2019's own. CAS(ME)³ and MMEW are not part of the composite: every clip
#: is −1 (their own emotions stay in ``emotion``).
MEGC2019_MAPS: dict[str, dict[str, int]] = {
    "samm": {"anger": _NEGATIVE, "contempt": _NEGATIVE, "disgust": _NEGATIVE, "fear": _NEGATIVE, "sadness": _NEGATIVE,
             "happiness": _POSITIVE, "surprise": _SURPRISE},
    "casme2": {"disgust": _NEGATIVE, "repression": _NEGATIVE, "happiness": _POSITIVE, "surprise": _SURPRISE},
    "smic": {"negative": _NEGATIVE, "positive": _POSITIVE, "surprise": _SURPRISE},
    "casme3a": {},
    "mmew": {},
}


#: The MEGC2019 composite's clips per dataset and class (negative, positive, surprise): 442 in all.
MEGC2019_COUNTS: dict[str, tuple[int, int, int]] = {"smic": (70, 51, 43), "casme2": (88, 32, 25), "samm": (92, 26, 15)}


def megc_counts(rows: Iterable[Mapping[str, object]]) -> dict[str, list[int]]:
    """Clips per dataset and MEGC2019 class of manifest rows (``dataset``, ``label_megc``)."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        label = int(str(row.get("label_megc", -1)) or -1)
        if label >= 0:
            counts.setdefault(str(row.get("dataset") or ""), [0, 0, 0])[label] += 1
    return counts


def megc_report(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """One line per dataset of the MEGC2019 composite: the clips found (and exported: status ok)
    per class, against the composite's (``MEGC2019_COUNTS``)."""
    found, done = megc_counts(rows), megc_counts(r for r in rows if r.get("status") == "ok")
    lines = []
    for dataset in [*MEGC2019_COUNTS, *sorted(set(found) - set(MEGC2019_COUNTS))]:
        have, ok = found.get(dataset, [0, 0, 0]), done.get(dataset, [0, 0, 0])
        expected = MEGC2019_COUNTS.get(dataset)
        if not any(have) and expected is None:
            continue
        line = f"MEGC2019 {dataset}: {sum(have)} clips ({'/'.join(map(str, have))} negative/positive/surprise), {sum(ok)} exported"
        if expected is not None:
            same = "as" if tuple(have) == expected else "the composite has"
            line += f"; {same} {sum(expected)} ({'/'.join(map(str, expected))})" if same != "as" else "; as in the composite"
        lines.append(line)
    return lines


def megc_label(dataset: str, emotion: str) -> int:
    """The MEGC2019 class of an estimated emotion.

    Parameters
    ----------
    dataset : str
        Dataset kind, a key of ``MEGC2019_MAPS`` (``"samm"``).
    emotion : str
        The annotation's estimated emotion (``"Anger"``); case and surrounding or repeated
        whitespace do not matter.

    Returns
    -------
    int
        0 negative, 1 positive, 2 surprise (an index of ``MEGC2019_CLASSES``), or −1 for an
        emotion that is not part of MEGC2019 (SAMM's "Other", an empty or unknown one).

    Raises
    ------
    ValueError
        If ``dataset`` has no MEGC2019 table.
    """
    table = MEGC2019_MAPS.get(dataset)
    if table is None:
        raise ValueError(f"no MEGC2019 labels for dataset {dataset!r}; known: {', '.join(MEGC2019_MAPS)}")
    return table.get(" ".join(emotion.split()).casefold(), NOT_IN_MEGC2019)


#: One action unit as SAMM codes it: an optional side (L left, R right, A asymmetric as we read it, T top,
#: B bottom, U unilateral; "A/L": either), the AU number, an optional intensity A–E ("B", or
#: "A/B": between the two).
_AU = r"(?:[LRATBU](?:/[LRATBU])?)?\d+(?:[A-E](?:/[A-E])?)?"
_AU_CODE = re.compile(rf"(?i){_AU}")
_REFERENCE = re.compile(rf"(?i)ref\(({_AU})\)")
_PLUS = re.compile(r"\+")
_OR = re.compile(r"(?i)\s*(?<![a-z])or(?![a-z])\s*")


def parse_action_units(text: str) -> list[str]:
    """The action units of an annotation, one token each.

    Parameters
    ----------
    text : str
        SAMM's "Action Units" cell: ``"4+7"``, ``"R12 + R15"``, ``"12B+25+26"``,
        ``"(R6 or R12)+R15"``, ``"7B+ ref(43)"``...

    Returns
    -------
    list of str
        The tokens in written order, whitespace removed: side prefix, AU number and
        intensity kept as coded (``"R12B"``, ``"A14C"``, ``"10A/B"``), letters upper case.
        An AU that SAMM writes inside ``ref(...)`` stays so (``"ref(43)"``): sammflow does not
        interpret the mark.
        Alternatives joined by ``or`` are all listed, in order (``"L12 or L14"`` gives
        ``["L12", "L14"]``: every AU that may be present; ``action_unit_groups`` keeps them
        grouped, and the shipped fixes resolve SAMM's five such rows). Text that is not an AU
        code (``"soft focus"``) is kept with ``_`` for its spaces (``"soft_focus"``), so a
        token never holds whitespace. Empty text gives ``[]``.
    """
    return [token for group in action_unit_groups(text) for token in group]


def action_unit_groups(text: str) -> list[tuple[str, ...]]:
    """The action units of an annotation, alternatives grouped.

    ``+`` separates the groups; inside one, ``or`` separates alternatives, parentheses only
    group (``"(R6 or R12)+R15"`` gives ``[("R6", "R12"), ("R15",)]``; ``"a or b+c"`` reads as
    ``(a or b)+c``). A group of one token is a plain AU. Tokens as in ``parse_action_units``.
    Unbalanced parentheses group nothing: they are ignored.
    """
    if not _balanced(text):
        text = re.sub(r"[()]", " ", text)
    groups = []
    for term in _split(text, _PLUS):
        tokens: list[str] = []
        for alternative in (_unwrap(a) for a in _split(_unwrap(term), _OR)):
            if len(_split(alternative, _PLUS)) > 1 or len(_split(alternative, _OR)) > 1:  # "(12+15) or 4": flattened
                tokens.extend(parse_action_units(alternative))
            elif alternative:
                tokens.append(_token(alternative))
        if tokens:
            groups.append(tuple(tokens))
    return groups


def _split(text: str, separator: re.Pattern[str]) -> list[str]:
    """``text`` split where ``separator`` matches outside parentheses; parts stripped, empty ones dropped."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        match = separator.match(text, i) if depth <= 0 else None
        if match and match.end() > i:
            parts.append(text[start:i])
            start = i = match.end()
            continue
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _unwrap(term: str) -> str:
    """A term without the parentheses around the whole of it, if any (``"(R6 or R12)"``)."""
    while term.startswith("(") and term.endswith(")") and _closing(term) == len(term) - 1:
        term = term[1:-1].strip()
    return term


def _closing(term: str) -> int:
    """Index of the parenthesis that closes the one opening ``term``; −1 if none."""
    depth = 0
    for i, char in enumerate(term):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return i
    return -1


def _token(text: str) -> str:
    compact = re.sub(r"\s+", "", text)
    if _AU_CODE.fullmatch(compact):
        return compact.upper()
    reference = _REFERENCE.fullmatch(compact)
    if reference:
        return f"ref({reference.group(1).upper()})"
    return "_".join(text.split())


def loso_folds(subjects: Iterable[str]) -> dict[str, int]:
    """Leave-one-subject-out folds: each distinct subject's index among the sorted subjects.

    Parameters
    ----------
    subjects : iterable of str
        Subject ids, repeated or not (one per clip is fine): ``["006", "007", "006"]``.

    Returns
    -------
    dict of str to int
        ``{"006": 0, "007": 1}``: the fold in which the subject's clips are the test set.
    """
    return {subject: fold for fold, subject in enumerate(sorted(set(subjects)))}
