"""Real chest X-ray reports (Indiana University / NLM Open-i) and their MeSH terms as X-ray findings.

The ``torchxrayvision`` package ships ``data/NLMCXR_reports.tgz``: 3,955 de-identified
radiology reports of the Indiana University chest X-ray collection as Open-i XML (licence
CC BY-NC-ND 4.0), each with COMPARISON, INDICATION, FINDINGS and IMPRESSION sections and
MeSH terms coded by NLM: *major* terms such as ``Cardiomegaly/mild``,
``Opacity/lung/base/left`` or ``Pleural Effusion/right/small`` (heading, then qualifiers)
and *automatic* ones (free-text concepts). The archive is read with :mod:`tarfile` and
:mod:`xml.etree`; ``torchxrayvision`` itself is never imported (its import needs
torchvision). :func:`find_openi_archive` locates it through the package metadata, then
through the ``site-packages`` folders.

**MeSH -> renderer findings** (:func:`map_mesh_term`, major terms only; headings are
matched case-insensitively):

| MeSH heading | finding (:data:`~.xray.FINDINGS`) | side / zone |
|---|---|---|
| Cardiomegaly (``/borderline`` excluded) | cardiomegaly; CTR by severity: mild 0.54-0.58, moderate 0.58-0.62, severe 0.62-0.66, unspecified 0.54-0.66 | - |
| Pleural Effusion(s) | effusion | right / left / bilateral; lower zone |
| Pneumothorax, Hydropneumothorax, Hemopneumothorax | pneumothorax | right / left; upper zone |
| Nodule, Mass, Multiple Pulmonary Nodules, (Calcified) Granuloma; Opacity or Density qualified ``round`` | nodule | right / left; upper / lower |
| Consolidation, Pneumonia, Airspace Disease, Infiltrate; Opacity or Density of the lung | consolidation, or infiltrates when qualified bilateral / diffuse / interstitial / multiple / scattered | right / left; upper / lower |
| Pulmonary Edema, Pulmonary Congestion, Lung Diseases Interstitial | infiltrates | both |

Qualifiers give the place: ``right``/``left``/``bilateral``; ``upper lobe``/``apex`` =
upper zone; ``lower lobe``/``base``/``middle lobe``/``lingula``/``retrocardiac`` = lower
zone (``middle lobe`` also means right, ``lingula`` and ``retrocardiac`` left). Terms on
other organs (``pleura``, ``mediastinum``, ``breast``, ``ribs``, ...) and every other
heading (atelectasis, emphysema, degenerative change, devices, ...) are not rendered.
:func:`mesh_to_spec` combines a report's terms into one :class:`~.xray.XraySpec`: opacities
named on both sides become bilateral infiltrates; a side or zone the terms do not give is
drawn at random and flagged ``imputed`` (the image then shows a place the text does not state).

:func:`generate_reports` writes reports of the same form (sections + major MeSH terms)
from random findings: the fallback when the archive is absent.
"""

from __future__ import annotations

import functools
import importlib.metadata
import site
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfusion.data.synthetic.xray import (
    BOTH, CARDIOMEGALY, CONSOLIDATION, EFFUSION, FINDINGS, INFILTRATES, LEFT, LOWER, NO_SIDE, NO_ZONE, NODULE,
    PNEUMOTHORAX, RIGHT, UPPER, XraySpec, sample_ctr,
)

#: The archive inside the torchxrayvision package.
ARCHIVE = Path("torchxrayvision") / "data" / "NLMCXR_reports.tgz"
#: Cardiothoracic-ratio range per cardiomegaly severity ("" = not stated).
CTR_BY_SEVERITY = {"mild": (0.54, 0.58), "moderate": (0.58, 0.62), "severe": (0.62, 0.66), "": (0.54, 0.66)}

_HEADINGS = {
    "cardiomegaly": CARDIOMEGALY, "pleural effusion": EFFUSION, "pleural effusions": EFFUSION,
    "pneumothorax": PNEUMOTHORAX, "hydropneumothorax": PNEUMOTHORAX, "hemopneumothorax": PNEUMOTHORAX,
    "nodule": NODULE, "mass": NODULE, "multiple pulmonary nodules": NODULE, "calcified granuloma": NODULE,
    "granuloma": NODULE, "consolidation": CONSOLIDATION, "pneumonia": CONSOLIDATION,
    "airspace disease": CONSOLIDATION, "infiltrate": CONSOLIDATION, "opacity": CONSOLIDATION,
    "density": CONSOLIDATION, "pulmonary edema": INFILTRATES, "pulmonary congestion": INFILTRATES,
    "lung diseases, interstitial": INFILTRATES,
}
_GENERIC = {"opacity", "density"}  # rendered only when placed in the lung
_LUNG_PLACES = {"lung", "retrocardiac", "upper lobe", "lower lobe", "middle lobe", "lingula", "base", "apex"}
_NOT_LUNG = {"pleura", "mediastinum", "breast", "ribs", "spine", "abdomen", "humerus", "clavicle", "thorax",
             "paratracheal", "soft tissue", "adipose tissue", "heart", "aorta", "diaphragm", "shoulder",
             "thoracic vertebrae", "lymph nodes", "thyroid gland", "neck"}
_DIFFUSE = {"bilateral", "diffuse", "interstitial", "multiple", "scattered"}
_UPPER = {"upper lobe", "apex"}
_LOWER = {"lower lobe", "base", "middle lobe", "lingula", "retrocardiac"}
_SEVERITY = ("borderline", "mild", "small", "moderate", "severe", "large")


@dataclass(frozen=True)
class OpenIReport:
    """One report of the collection (or a generated one of the same form).

    Attributes:
        uid: "CXR1", ... (Open-i id; "GEN-000001" for generated reports).
        comparison, indication, findings, impression: section texts ("" where empty).
        mesh: major MeSH terms, e.g. ("Cardiomegaly/mild", "Pleural Effusion/right").
        mesh_automatic: automatically extracted terms.
        caption: caption of the first image ("Xray Chest PA and Lateral").
        n_images: number of images (PA, lateral, ...) of the study.
    """

    uid: str
    comparison: str
    indication: str
    findings: str
    impression: str
    mesh: tuple[str, ...]
    mesh_automatic: tuple[str, ...]
    caption: str
    n_images: int

    @property
    def text(self) -> str:
        """The report as written to a file: ``FINDINGS: ...`` and ``IMPRESSION: ...`` (non-empty sections)."""
        parts = [f"{name}: {body}" for name, body in (("FINDINGS", self.findings), ("IMPRESSION", self.impression))
                 if body]
        return "\n\n".join(parts)


@dataclass(frozen=True)
class MeshFinding:
    """A MeSH term as a renderer finding.

    Attributes:
        term: the MeSH term.
        finding: index in :data:`~.xray.FINDINGS`.
        side: :data:`~.xray.RIGHT`, :data:`~.xray.LEFT`, :data:`~.xray.BOTH` or -1 (not stated).
        zone: :data:`~.xray.UPPER`, :data:`~.xray.LOWER` or -1 (not stated).
        severity: "mild", "small", "moderate", "severe", "large" or "".
    """

    term: str
    finding: int
    side: int
    zone: int
    severity: str


@dataclass
class MeshMapping:
    """Reports' MeSH terms as what to draw.

    Attributes:
        spec: (N rows) findings, sides, zones and cardiothoracic ratios.
        imputed: (N, F) bool, a present finding whose side or zone was drawn at random.
        rendered: per report, the terms that made a finding.
        unrendered: per report, the major terms that did not.
    """

    spec: XraySpec
    imputed: np.ndarray
    rendered: list[tuple[str, ...]]
    unrendered: list[tuple[str, ...]]


def find_openi_archive() -> Path | None:
    """The path of ``torchxrayvision/data/NLMCXR_reports.tgz`` if installed, else ``None`` (no import)."""
    try:
        for entry in importlib.metadata.files("torchxrayvision") or ():
            if Path(str(entry)).as_posix().endswith(ARCHIVE.as_posix()):
                path = Path(str(entry.locate()))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    folders = [*sys.path, *site.getsitepackages(), site.getusersitepackages()]
    for folder in dict.fromkeys(folders):
        path = Path(folder) / ARCHIVE
        if folder and path.is_file():
            return path
    return None


def _section(root: ElementTree.Element, label: str) -> str:
    for node in root.iter("AbstractText"):
        if node.get("Label") == label:
            return " ".join((node.text or "").split())
    return ""


def _parse(name: str, data: bytes) -> OpenIReport:
    root = ElementTree.fromstring(data)
    uid = root.find("uId")
    mesh = root.find("MeSH")
    terms = [(node.tag, " ".join((node.text or "").split())) for node in (mesh if mesh is not None else ())]
    caption = root.find("parentImage/caption")
    return OpenIReport(
        uid=uid.get("id", "") if uid is not None else Path(name).stem,
        comparison=_section(root, "COMPARISON"), indication=_section(root, "INDICATION"),
        findings=_section(root, "FINDINGS"), impression=_section(root, "IMPRESSION"),
        mesh=tuple(t for tag, t in terms if tag == "major" and t),
        mesh_automatic=tuple(t for tag, t in terms if tag == "automatic" and t),
        caption=" ".join((caption.text or "").split()) if caption is not None else "",
        n_images=len(root.findall("parentImage")),
    )


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, mtime_ns: int) -> tuple[OpenIReport, ...]:
    from medfusion.data.io.base import DataReadError

    reports = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(".xml"):
                    reports.append(_parse(member.name, archive.extractfile(member).read()))
    except (tarfile.TarError, OSError, EOFError, ElementTree.ParseError) as error:
        raise DataReadError(path, f"not a readable Open-i report archive ({type(error).__name__}: {error})") from error
    if not reports:
        raise DataReadError(path, "the archive holds no Open-i XML report")
    return tuple(sorted(reports, key=lambda r: (len(r.uid), r.uid)))


def read_openi_reports(path: str | Path | None = None) -> tuple[OpenIReport, ...]:
    """Parse every report of an Open-i archive (cached per file and modification time).

    Args:
        path: the ``.tgz``; default :func:`find_openi_archive`.

    Returns:
        Reports sorted by id (CXR1, CXR2, ...).

    Raises:
        DataReadError: when no archive is found, or it is empty, corrupt or holds no report.
    """
    from medfusion.data.io.base import DataReadError, check_file

    if path is None:
        path = find_openi_archive()
        if path is None:
            raise DataReadError(ARCHIVE, "not installed: install torchxrayvision (its data ship with the wheel)")
    path = check_file(path)
    return _read_cached(str(path.resolve()), path.stat().st_mtime_ns)


def parse_mesh_term(term: str) -> tuple[str, tuple[str, ...]]:
    """("Opacity", ("lung", "base", "left")) from "Opacity/lung/base/left" (stripped, qualifiers lower-case)."""
    heading, *qualifiers = (part.strip() for part in term.split("/"))
    return heading, tuple(q.lower() for q in qualifiers if q)


def map_mesh_term(term: str) -> MeshFinding | None:
    """The renderer finding a major MeSH term shows (module table), or ``None`` if it is not rendered."""
    heading, qualifiers = parse_mesh_term(term)
    finding = _HEADINGS.get(heading.lower())
    q = set(qualifiers)
    if finding is None or (finding == CARDIOMEGALY and "borderline" in q):
        return None
    if finding in (NODULE, CONSOLIDATION) and q & _NOT_LUNG:
        return None
    generic = heading.lower() in _GENERIC
    if generic and not q & _LUNG_PLACES:
        return None
    if generic and "round" in q:
        finding = NODULE
    elif finding == CONSOLIDATION and q & _DIFFUSE:
        finding = INFILTRATES
    side = (BOTH if "bilateral" in q else RIGHT if "right" in q or "middle lobe" in q
            else LEFT if q & {"left", "lingula", "retrocardiac"} else NO_SIDE)
    zone = UPPER if q & _UPPER else LOWER if q & _LOWER else NO_ZONE
    severity = next((s for s in _SEVERITY if s in q), "")
    return MeshFinding(term, finding, side, zone, severity)


def _ctr_range(severities: list[str]) -> tuple[float, float]:
    """CTR range of the gravest stated severity ("small" counts as mild, "large" as severe)."""
    named = {"small": "mild", "large": "severe"}
    stated = [named.get(s, s) for s in severities if s]
    return CTR_BY_SEVERITY[max(stated, key=("mild", "moderate", "severe").index) if stated else ""]


def mesh_to_spec(mesh: Sequence[Sequence[str]], rng: np.random.Generator) -> MeshMapping:
    """Combine each report's major MeSH terms into what to draw.

    Args:
        mesh: N sequences of major MeSH terms.
        rng: draws imputed sides / zones and cardiothoracic ratios.

    Returns:
        :class:`MeshMapping` with an :class:`~.xray.XraySpec` of N rows.
    """
    n, f = len(mesh), len(FINDINGS)
    present = np.zeros((n, f), dtype=bool)
    side = np.full((n, f), NO_SIDE, dtype=np.int8)
    zone = np.full((n, f), NO_ZONE, dtype=np.int8)
    imputed = np.zeros((n, f), dtype=bool)
    random_side = rng.integers(0, 2, (n, f)).astype(np.int8)
    random_zone = rng.integers(0, 2, (n, f)).astype(np.int8)
    effusion_side = rng.choice(np.array([RIGHT, LEFT, BOTH], dtype=np.int8), n)
    ctr = sample_ctr(rng, np.zeros(n, dtype=bool))
    ctr_draw = rng.random(n)
    rendered, unrendered = [], []
    for i, terms in enumerate(mesh):
        found = [(t, map_mesh_term(t)) for t in terms]
        rendered.append(tuple(t for t, m in found if m is not None))
        unrendered.append(tuple(t for t, m in found if m is None))
        by = {k: [m for _, m in found if m is not None and m.finding == k] for k in range(f)}
        if {RIGHT, LEFT} <= {m.side for m in by[CONSOLIDATION]}:  # opacities on both sides: bilateral infiltrates
            by[INFILTRATES] += by[CONSOLIDATION]
            by[CONSOLIDATION] = []
        for k, items in by.items():
            present[i, k] = bool(items)
            if not items or k == CARDIOMEGALY:
                continue
            stated = {m.side for m in items} - {NO_SIDE}
            if k == INFILTRATES:
                side[i, k] = BOTH
            elif k == EFFUSION:
                side[i, k] = (BOTH if BOTH in stated or len(stated) > 1 else min(stated) if stated
                              else effusion_side[i])
                zone[i, k], imputed[i, k] = LOWER, not stated
            else:  # one place: the first term naming a side, its zone (pneumothorax: apical)
                first = next((m for m in items if m.side in (RIGHT, LEFT)), None)
                zones = [m.zone for m in items if m.zone != NO_ZONE and (first is None or m.side == first.side)]
                side[i, k] = first.side if first is not None else random_side[i, k]
                zone[i, k] = UPPER if k == PNEUMOTHORAX else zones[0] if zones else random_zone[i, k]
                imputed[i, k] = first is None or (k != PNEUMOTHORAX and not zones)
        if by[CARDIOMEGALY]:
            low, high = _ctr_range([m.severity for m in by[CARDIOMEGALY]])
            ctr[i] = low + (high - low) * ctr_draw[i]
    return MeshMapping(XraySpec(present, side, zone, ctr), imputed, rendered, unrendered)


#: Prevalence of each finding in :func:`generate_reports` (close to the Open-i rates).
GENERATED_RATES = {"consolidation": 0.09, "infiltrates": 0.07, "effusion": 0.05, "cardiomegaly": 0.09,
                   "pneumothorax": 0.02, "nodule": 0.1}
_SIDE_WORD = {RIGHT: "right", LEFT: "left", BOTH: "bilateral"}
_ZONE_WORD = {UPPER: "upper", LOWER: "lower"}


def _generated_findings(k: int, side: int, zone: int, size: str) -> tuple[str, str, str]:
    """(findings sentence, impression phrase, MeSH term) of one present finding."""
    s, z = _SIDE_WORD.get(side, ""), _ZONE_WORD.get(zone, "")
    if k == CARDIOMEGALY:
        return (f"The heart is {size}ly enlarged.", f"{size.capitalize()} cardiomegaly.", f"Cardiomegaly/{size}")
    if k == EFFUSION:
        plural = "s" if side == BOTH else ""
        return (f"There {'are' if plural else 'is a'} {size} {s} pleural effusion{plural}.",
                f"{size.capitalize()} {s} pleural effusion{plural}.", f"Pleural Effusion/{s}/{size}")
    if k == CONSOLIDATION:
        return (f"Focal airspace consolidation in the {s} {z} lobe.", f"{s.capitalize()} {z} lobe pneumonia.",
                f"Consolidation/lung/{z} lobe/{s}")
    if k == INFILTRATES:
        return ("Diffuse bilateral interstitial opacities.", "Bilateral interstitial opacities, possibly edema.",
                "Opacity/lung/bilateral/interstitial/diffuse")
    if k == PNEUMOTHORAX:
        return (f"There is a {size} {s} apical pneumothorax.", f"{size.capitalize()} {s} pneumothorax.",
                f"Pneumothorax/apex/{s}/{size}")
    return (f"A {size} nodule projects over the {s} {z} lung.", f"{s.capitalize()} {z} lobe nodule.",
            f"Nodule/lung/{z} lobe/{s}")


_NEGATIVES = {CARDIOMEGALY: "The heart size is normal.", CONSOLIDATION: "No focal consolidation.",
              EFFUSION: "No pleural effusion.", PNEUMOTHORAX: "No pneumothorax."}


def generate_reports(n: int, rng: np.random.Generator) -> tuple[OpenIReport, ...]:
    """N reports of the Open-i form written from random findings (the fallback without the archive).

    Each present finding gets a FINDINGS sentence, an IMPRESSION phrase and a major MeSH
    term naming its side and zone, so :func:`mesh_to_spec` recovers exactly what was drawn
    (rates :data:`GENERATED_RATES`; pertinent negatives for absent findings; "normal" when
    nothing is present).

    Args:
        n: number of reports.
        rng: the random generator.

    Returns:
        Reports with uids "GEN-000001", ...
    """
    spec = XraySpec.random(rng, n, GENERATED_RATES)
    sizes = rng.choice(np.array(["mild", "moderate", "severe"]), n)
    amounts = rng.choice(np.array(["small", "moderate", "large"]), n)
    reports = []
    for i in range(n):
        sentences, impressions, mesh = [], [], []
        for k in np.flatnonzero(spec.present[i]):
            size = sizes[i] if k == CARDIOMEGALY else "small" if k == NODULE else amounts[i]
            sentence, impression, term = _generated_findings(int(k), int(spec.side[i, k]), int(spec.zone[i, k]), size)
            sentences.append(sentence)
            impressions.append(impression)
            mesh.append(term)
        sentences += [text for k, text in _NEGATIVES.items() if not spec.present[i, k]]
        reports.append(OpenIReport(
            uid=f"GEN-{i + 1:06d}", comparison="None.", indication="Chest radiograph.", findings=" ".join(sentences),
            impression=" ".join(impressions) or "No acute cardiopulmonary abnormality.",
            mesh=tuple(mesh) or ("normal",), mesh_automatic=(), caption="Xray Chest PA and Lateral", n_images=1,
        ))
    return tuple(reports)
