"""The genlab cache and verified downloads into it (datasets and network weights alike).

A download is written to a temporary file beside its destination and renamed only once complete and
verified, so an interrupted or truncated transfer never leaves a half file where a good one is expected. The
SHA-256 of every file is recorded at its first successful download (`checksums.json` in the cache); later
uses verify against that record, so a file corrupted on disk is caught instead of feeding garbage to training.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from genlab.utils import GenlabError, atomic_path, atomic_write_text

CHECKSUMS_FILE = "checksums.json"
_CHUNK = 1 << 16
_TIMEOUT_S = 30


def cache_dir() -> Path:
    """The genlab cache folder: `$GENLAB_CACHE` when set, else `~/.cache/genlab` (not created here)."""
    configured = os.environ.get("GENLAB_CACHE")
    return Path(configured).expanduser() if configured else Path("~/.cache/genlab").expanduser()


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum_key(path: Path) -> str:
    """Files in the cache are recorded by their path relative to it, so moving the whole cache keeps records."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(cache_dir().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def _read_checksums() -> dict[str, str]:
    store = cache_dir() / CHECKSUMS_FILE
    if not store.exists():
        return {}
    try:
        records = json.loads(store.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise GenlabError(f"{store}: unreadable checksum store ({error}); delete it to start a new one") from error
    if not isinstance(records, dict):
        raise GenlabError(f"{store}: expected a JSON object of path -> sha256; delete it to start a new one")
    return records


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The SHA-256 recorded for `path` at its first successful download, or None."""
    return _read_checksums().get(_checksum_key(Path(path)))


def record_sha256(path: str | os.PathLike, digest: str | None = None) -> str:
    """Record the SHA-256 of `path` in the cache's checksums.json (if none is recorded yet); return it.

    An existing record is never overwritten: it is the reference later uses verify against.
    """
    path = Path(path)
    records = _read_checksums()
    key = _checksum_key(path)
    if key in records:
        return records[key]
    records[key] = digest or sha256_of(path)
    atomic_write_text(cache_dir() / CHECKSUMS_FILE, json.dumps(records, indent=2, sort_keys=True) + "\n")
    return records[key]


def verify_file(
    path: str | os.PathLike,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    shown_as: Path | None = None,
) -> str:
    """Check a file's size and SHA-256 against the expected values and the recorded checksum; return its digest.

    `expected_sha256` may be the full digest or a prefix of it (hub-style weight files carry one in their name).
    A mismatch raises a GenlabError telling the user to delete the file (it is then downloaded again).
    `shown_as` is the name used in messages (the destination, when `path` is still a temporary file).
    """
    path = Path(path)
    shown = shown_as or path
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise GenlabError(
            f"{shown}: size {size} bytes, expected {expected_size}; the file is incomplete or corrupt: "
            "delete it and try again"
        )
    digest = sha256_of(path)
    if expected_sha256 is not None and not digest.startswith(expected_sha256.lower()):
        raise GenlabError(
            f"{shown}: SHA-256 {digest} does not match the expected {expected_sha256}; "
            "the file is corrupt or not the right one: delete it and try again"
        )
    recorded = recorded_sha256(shown)
    if recorded is not None and digest != recorded:
        raise GenlabError(
            f"{shown}: SHA-256 {digest} differs from {recorded}, recorded when it was first downloaded "
            f"(in {cache_dir() / CHECKSUMS_FILE}); the file is corrupt or was replaced: delete it to download "
            "it again (or remove its entry from the checksum store to accept the new file)"
        )
    return digest


def fetch_file(
    url: str,
    destination: str | os.PathLike,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    description: str = "",
    record: bool = True,
) -> Path:
    """Return `destination`, downloading it from `url` first when absent; verified either way.

    An existing file that fails verification is an error (never silently replaced: the user may have put it
    there). A download goes to a temporary file beside the destination; a transfer shorter than its
    Content-Length, or a size or SHA-256 mismatch, raises a GenlabError and leaves nothing at the destination.
    The SHA-256 is recorded after the first successful download (unless `record` is False: then the caller
    records it with `record_sha256` once it has checked the content, e.g. extracted an archive) and checked
    on every later use. A file put in place by hand is recorded the same way, once it has proved usable.
    """
    destination = Path(destination)
    label = description or destination.name
    if destination.exists():
        verify_file(destination, expected_size, expected_sha256)
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    by_hand = f"download {url} by hand and put it at {destination}"
    with atomic_path(destination) as temporary:
        _download(url, temporary, label, by_hand)
        digest = verify_file(temporary, expected_size, expected_sha256, shown_as=destination)
    if record:
        record_sha256(destination, digest)
    return destination


def _download(url: str, temporary: Path, label: str, by_hand: str) -> None:
    """Stream `url` into `temporary` with a progress bar; a short or failed transfer raises a GenlabError."""
    from tqdm import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise GenlabError(
            f"could not download {label}: HTTP {error.code} {error.reason} from {url}; {by_hand}"
        ) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise GenlabError(f"could not download {label} (offline? {reason}); {by_hand}") from error
    received = 0
    with response:
        header = response.headers.get("Content-Length")
        expected = int(header) if header and header.isdigit() else None
        try:
            with open(temporary, "wb") as output, tqdm(
                total=expected, unit="B", unit_scale=True, desc=label, disable=None, leave=False
            ) as progress:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    output.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
        except http.client.IncompleteRead as error:
            received += len(error.partial)
            raise GenlabError(
                f"could not download {label}: transfer cut short after {received} of {expected} bytes; {by_hand}"
            ) from error
        except (OSError, http.client.HTTPException) as error:
            raise GenlabError(f"could not download {label}: transfer failed ({error}); {by_hand}") from error
    if expected is not None and received != expected:
        raise GenlabError(
            f"could not download {label}: received {received} bytes, the server announced {expected}; {by_hand}"
        )


def safe_extract(archive: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Extract a tar archive into `destination`, refusing absolute paths, `..`, links and special files.

    Extraction goes to a temporary folder beside `destination`, renamed into place when complete.
    """
    archive, destination = Path(archive), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(archive, member)
                tar.extractall(staging, members=members, **_tar_filter())
        except (tarfile.TarError, EOFError, OSError) as error:
            raise GenlabError(f"{archive}: corrupt or truncated archive ({error}); delete it and try again") from error
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse a member that could write outside the extraction folder (or is not a plain file or folder)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts or ":" in member.name:
        raise GenlabError(f"{archive}: unsafe member {member.name!r} (absolute path or '..'); refusing to extract")
    if not (member.isfile() or member.isdir()):
        raise GenlabError(f"{archive}: member {member.name!r} is a link or special file; refusing to extract")


def _tar_filter() -> dict:
    """tarfile's own 'data' filter where Python has it (3.11.4+): a second line of defence."""
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


# ---------------------------------------------------------------------------------------------------------
# The pix2pix facades task.
