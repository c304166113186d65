"""The trust policy of both tools: which keys we trust and in what order, how a signer is judged
(unknown, expired, revoked), when a verdict counts, and the words users see. Standard library
and `errors` only, Python 3.7+: the x2nestos zipapp bundles it.
"""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from nestos_installer.errors import BadSignature, VerificationError

PACKAGE_KEYS_DIR = Path(__file__).resolve().parent.parent / "keys"
SYSTEM_KEYS_DIR = Path("/etc/nestos-installer/keys.d")

# The words users see. Tests and scripts match them: keep them exact.
FAILURE = "GPG verification failure"
SIG_MISSING = "--insecure not specified and signature not found"
NO_SIGNATURE = "no valid OpenPGP signature found"
NO_VALID_SIGNATURE = "no valid signature"
BAD_SIGNATURE = "bad signature"
SIG_EXPIRED = "signature has expired"
UNCHECKED = "signature could not be checked"
ENDED_EARLY = "verification ended before the end of the data"
ABORTED = "verification was aborted"


def signing_key(key_id: str) -> str:
    return f"signing key 0x{key_id}"


def unknown_key(key: str) -> str:
    """`key`: "0x" + the key id a verifier names, or the fingerprint of a key we do not hold."""
    return f"signed by unknown key {key}"


def key_revoked(who: str) -> str:
    return f"{who} has been revoked"


def key_expired(who: str) -> str:
    return f"{who} has expired"


def refused(problem: str) -> BadSignature:
    """The installer's refusal: `GPG verification failure: <problem>`."""
    return BadSignature(f"{FAILURE}: {problem}")


def check_verdict(problem: Optional[str], *, delivered: bool, tool: str) -> None:
    """The verdict rules: the verifier's complaint refuses, and a verdict on data the
    verifier did not read to the end never counts."""
    if problem is None and not delivered:
        problem = f"{tool} did not read all of the data"
    if problem is not None:
        raise refused(problem)


def _zipapp() -> Any:
    """The zipimporter that loaded this module (inside the x2nestos zipapp), else None."""
    loader = globals().get("__loader__")
    return loader if isinstance(getattr(loader, "archive", None), str) else None


def _shipped_keys() -> List[Path]:
    """The *.asc keys shipped in the package: its keys/ folder, or that folder in the zipapp."""
    if PACKAGE_KEYS_DIR.is_dir():
        return sorted(PACKAGE_KEYS_DIR.glob("*.asc"))
    loader = _zipapp()
    if loader is None:
        return []
    inner = __name__.split(".")[0] + "/keys/"
    with zipfile.ZipFile(loader.archive) as z:
        names = z.namelist()
    found = [n for n in names if n.startswith(inner) and n.endswith(".asc")]
    return sorted(Path(loader.archive, n) for n in found if "/" not in n[len(inner) :])


def _read_bytes(path: Path) -> bytes:
    loader = _zipapp()
    if loader is not None and str(path).startswith(loader.archive + os.sep):
        return bytes(loader.get_data(str(path)))
    return path.read_bytes()


class Keyring:
    """The OpenPGP public keys (armored or binary files) that image signatures must come from."""

    def __init__(self, files: Sequence[Path]) -> None:
        self._files = [Path(f) for f in files]

    @classmethod
    def default(
        cls, extra: Sequence[Path] = (), *, system_dir: Optional[Path] = SYSTEM_KEYS_DIR
    ) -> Keyring:
        """Keys shipped in the package, then /etc/nestos-installer/keys.d/*.asc, then `extra`."""
        files = _shipped_keys()
        if system_dir is not None and system_dir.is_dir():
            files += sorted(system_dir.glob("*.asc"))
        files += [Path(p) for p in extra]
        return cls(files)

    @property
    def files(self) -> List[Path]:
        return list(self._files)

    def read(self) -> List[bytes]:
        """Every key file's bytes. A file that is plainly not OpenPGP (neither an armored
        public key block nor binary packets, whose first byte has its high bit set) is
        refused here; gpg's import judges the rest."""
        datas = []
        for path in self._files:
            try:
                data = _read_bytes(path)
            except OSError as e:
                raise VerificationError(f"reading signing key {path}") from e
            if b"-----BEGIN PGP PUBLIC KEY BLOCK-----" not in data and not (
                data and data[0] & 0x80
            ):
                raise VerificationError(f"no OpenPGP public key found in {path}")
            datas.append(data)
        return datas

    def __repr__(self) -> str:
        return f"Keyring({[str(f) for f in self._files]!r})"


@dataclass(frozen=True)
class VerifiedSignature:
    """Who signed: the primary key fingerprint (pinned to our keyring), key id and user id."""

    fingerprint: str
    key_id: str
    username: str


@dataclass(frozen=True)
class TrustedKey:
    """A key gpg accepted into our keyring, as gpg lists it (python-gnupg's `list_keys()`)."""

    fingerprint: str  # of the primary key
    key_id: str
    username: str
    validity: str  # gpg's validity letter: "r" revoked, "e" expired
    expires: str  # seconds since the epoch, "" for never

    @classmethod
    def from_listing(cls, key: Mapping[str, Any]) -> TrustedKey:
        primary = str(key.get("fingerprint", "")).upper()
        uids = key.get("uids") or [""]
        return cls(
            fingerprint=primary,
            key_id=str(key.get("keyid", "") or primary[-16:]).upper(),
            username=str(uids[0]),
            validity=str(key.get("trust", "")),
            expires=str(key.get("expires", "") or ""),
        )

    def problem(self) -> Optional[str]:
        """gpg's verdict on the key itself: what it would call REVKEYSIG / EXPKEYSIG."""
        if self.validity == "r":
            return key_revoked(signing_key(self.key_id))
        if self.validity == "e" or (self.expires.isdigit() and int(self.expires) <= time.time()):
            return key_expired(signing_key(self.key_id))
        return None


def fingerprint_map(listing: Iterable[Mapping[str, Any]]) -> Dict[str, TrustedKey]:
    """Every (sub)key fingerprint of the keys gpg holds -> its primary key: the trust set.
    Primary and subkey fingerprints alike (an import may name a subkey; signatures name the
    primary)."""
    keys: Dict[str, TrustedKey] = {}
    for key in listing:
        trusted = TrustedKey.from_listing(key)
        if not trusted.fingerprint:
            continue
        keys[trusted.fingerprint] = trusted
        for sub in key.get("subkeys") or []:
            if len(sub) >= 3 and sub[2]:
                keys[str(sub[2]).upper()] = trusted
    return keys


def judge_signer(signers: Sequence[str], keys: Mapping[str, TrustedKey]) -> VerifiedSignature:
    """The signer a verifier named (sqv prints its fingerprint) must be one of our keys, and
    one that is neither revoked nor expired."""
    if not signers:
        raise refused(NO_VALID_SIGNATURE)
    key = keys.get(signers[0])
    if key is None:
        raise refused(unknown_key(signers[0]))
    problem = key.problem()
    if problem is not None:
        raise refused(problem)
    return VerifiedSignature(fingerprint=key.fingerprint, key_id=key.key_id, username=key.username)


def _primary(validsig: Sequence[str]) -> str:
    return (validsig[9] if len(validsig) >= 10 else validsig[0]).upper()


@dataclass(frozen=True)
class GpgStatus:
    """What gpg or gpgv said: its `[GNUPG:]` status lines by keyword, and its other lines."""

    codes: Dict[str, List[List[str]]]
    messages: Tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GpgStatus:
        codes: Dict[str, List[List[str]]] = {}
        messages = []
        for line in text.splitlines():
            if line.startswith("[GNUPG:] "):
                words = line[9:].split()
                if words:
                    codes.setdefault(words[0], []).append(words[1:])
            elif line.strip():
                messages.append(line.rstrip())
        return cls(codes, tuple(messages))

    def problem(self, keys: Optional[Mapping[str, TrustedKey]]) -> Optional[str]:
        """Why the signature does not count, or None. `keys`: the trust set every VALIDSIG must
        name; None when the verifier's keyring held nothing but our keys (gpgv)."""
        status = self.codes
        if "NODATA" in status or ("NEWSIG" not in status and "VALIDSIG" not in status):
            return NO_SIGNATURE
        if "NO_PUBKEY" in status:
            return unknown_key(f"0x{status['NO_PUBKEY'][0][0]}")
        if "BADSIG" in status:
            return BAD_SIGNATURE
        if "EXPKEYSIG" in status:
            return key_expired(signing_key(status["EXPKEYSIG"][0][0]))
        if "REVKEYSIG" in status:
            return key_revoked(signing_key(status["REVKEYSIG"][0][0]))
        if "EXPSIG" in status:
            return SIG_EXPIRED
        if "ERRSIG" in status:
            return UNCHECKED
        if "VALIDSIG" not in status:
            return NO_VALID_SIGNATURE
        for valid in status["VALIDSIG"]:
            if keys is not None and _primary(valid) not in keys:
                return unknown_key(_primary(valid))
        return None

    def signer(self) -> VerifiedSignature:
        """The signer of a signature `problem()` found nothing wrong with."""
        primary = _primary(self.codes["VALIDSIG"][0])
        goodsig = self.codes.get("GOODSIG", [[""]])[0]
        return VerifiedSignature(
            fingerprint=primary,
            key_id=goodsig[0] if goodsig else primary[-16:],
            username=" ".join(goodsig[1:]),
        )

    def file_refusal(self, name: str, problem: str) -> BadSignature:
        """x2nestos's words for an artifact whose signature is refused: `<file>: <why>`."""
        if "NO_PUBKEY" in self.codes:
            why = "signed by a key that is not trusted"
        elif "BADSIG" in self.codes:
            why = "bad signature (the data was modified)"
        elif "EXPKEYSIG" in self.codes or "REVKEYSIG" in self.codes:
            why = problem
        else:
            why = "signature does not verify"
        return BadSignature(f"{name}: {why}")
