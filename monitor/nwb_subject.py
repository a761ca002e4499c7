"""What spikewire cannot know about a recorded preparation, as the scientist states it for the NWB export:
the subject (id, species, sex, age), the session's description and where the electrodes sit.

They come from `spikewire export`'s flags or from a sidecar file of the same keys (YAML, read with
PyYAML's ``safe_load``; a ``.toml`` file is read as TOML), flags winning over the file. Every value is
checked here, before anything is written, and a bad one is refused in one line that names its flag or key:
NWB (and NWB Inspector, which DANDI runs) wants the age as an ISO 8601 duration (``P90D``, ``P2Y6M``, or a
range ``P90D/P120D``) and the sex as one of M, F, U, O.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

FIELDS = {
    "subject_id": "the preparation's (or animal's) identifier",
    "species": "Latin binomial (Rattus norvegicus) or an NCBI taxonomy IRI",
    "sex": "M, F, U (unknown) or O (other)",
    "age": "ISO 8601 duration at the session (P90D, P2Y6M, or a range P90D/P120D)",
    "session_description": "what the session was; replaces the network's description",
    "electrode_location": "where the rig's electrodes record (brain area, culture region); default 'unknown'",
}
"""Sidecar key -> what it holds; each is also the flag ``--subject-id`` etc."""

SEXES = ("M", "F", "U", "O")
_NUMBER = r"\d+(?:\.\d+)?"
DURATION = re.compile(rf"P(?!$)(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
                      rf"(?:T(?=\d)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?")
"""An ISO 8601 duration as NWB Inspector accepts it (weeks may mix with other parts)."""
SPECIES = re.compile(r"[A-Z][a-z]+ [a-z]+.*|https?://purl\.obolibrary\.org/obo/NCBITaxon_\d+")


class SubjectError(ValueError):
    """A value refused, in one line naming its flag or key."""


@dataclass(frozen=True)
class Preparation:
    """What the scientist says of the recorded preparation; None: not said."""

    subject_id: str | None = None
    species: str | None = None
    sex: str | None = None
    age: str | None = None
    session_description: str | None = None
    electrode_location: str | None = None

    def missing(self) -> list[str]:
        """The flags NWB Inspector needs that were not given (it rates a missing sex or age CRITICAL, a missing
        species a violation; the subject id defaults to the network's name)."""
        return [_flag(k) for k in ("species", "sex", "age") if getattr(self, k) is None]

    @property
    def subject_given(self) -> bool:
        return any(getattr(self, k) is not None for k in ("subject_id", "species", "sex", "age"))


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_value(key: str, value, where: str) -> str:
    """``value`` of ``key`` as it goes into the file; SubjectError naming ``where`` if it is refused."""
    if not isinstance(value, str) or not value.strip():
        raise SubjectError(f"{where}: must be a non-empty text, got {value!r}")
    value = value.strip()
    if not value.isprintable():
        raise SubjectError(f"{where}: must be one line of printable text, got {value!r}")
    if key == "sex" and value not in SEXES:
        raise SubjectError(f"{where}: must be one of {', '.join(SEXES)} (male, female, unknown, other), got {value!r}")
    if key == "age":
        bounds = value.split("/")
        ok = DURATION.fullmatch(value) or (len(bounds) == 2 and any(bounds)
                                          and all(b == "" or DURATION.fullmatch(b) for b in bounds))
        if not ok:
            raise SubjectError(f"{where}: must be an ISO 8601 duration such as P90D (90 days), P2Y6M or a range "
                               f"P90D/P120D, got {value!r}")
        if len(bounds) == 2 and all(bounds) and _days(bounds[0]) > _days(bounds[1]):
            raise SubjectError(f"{where}: a range runs from the younger age to the older, got {value!r}")
    return value


_UNIT_DAYS = {"Y": 365.25, "M": 30.4375, "W": 7.0, "D": 1.0}
_TIME_DAYS = {"H": 1 / 24, "M": 1 / 1440, "S": 1 / 86400}


def _days(duration: str) -> float:
    """An ISO 8601 duration (DURATION) in days, months and years at their mean length: for ordering only."""
    date, _, time = duration[1:].partition("T")
    return (sum(float(n) * _UNIT_DAYS[u] for n, u in re.findall(rf"({_NUMBER})([YMWD])", date))
            + sum(float(n) * _TIME_DAYS[u] for n, u in re.findall(rf"({_NUMBER})([HMS])", time)))


def read_sidecar(path: str | Path) -> dict[str, str]:
    """The keys of a sidecar file, checked; SubjectError (one line) for an unreadable file, an unknown key or
    a bad value."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SubjectError(f"--subject {path}: cannot be read ({e.strerror or e})") from None
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SubjectError(f"--subject {path}: not valid TOML ({e})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise SubjectError(f"--subject {path}: reading YAML needs PyYAML (pip install pyyaml); or give a .toml "
                               "file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SubjectError(f"--subject {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SubjectError(f"--subject {path}: must be a mapping of keys ({', '.join(FIELDS)}), got a "
                           f"{type(data).__name__}")
    out = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise SubjectError(f"--subject {path}: unknown key {key!r} (known: {', '.join(FIELDS)})")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "subject_id":
            value = str(value)  # an id written as a bare number
        out[key] = check_value(key, value, f"--subject {path}: {key}")
    return out


def preparation(flags: dict[str, str | None], sidecar: str | Path | None = None) -> Preparation:
    """The sidecar's keys (if any), then every flag given over them; SubjectError (one line) if refused."""
    values = read_sidecar(sidecar) if sidecar is not None else {}
    for key, value in flags.items():
        if key not in FIELDS:
            raise SubjectError(f"{_flag(key)}: not a subject flag (known: {', '.join(_flag(k) for k in FIELDS)})")
        if value is not None:
            values[key] = check_value(key, value, _flag(key))
    return Preparation(**{f.name: values.get(f.name) for f in fields(Preparation)})


def species_warning(prep: Preparation) -> str | None:
    """A species NWB Inspector will flag (not Latin binomial, not an NCBI taxonomy IRI), said before export."""
    if prep.species is not None and not SPECIES.fullmatch(prep.species):
        return (f"--species {prep.species!r}: NWB wants a Latin binomial (Rattus norvegicus, Mus musculus) or an NCBI "
                "taxonomy IRI (http://purl.obolibrary.org/obo/NCBITaxon_10116); NWB Inspector will flag it")
    return None
