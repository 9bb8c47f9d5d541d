"""Downloads: verified, atomic, SHA-256 recorded; truncated or offline transfers leave nothing behind;
archives are extracted safely; the facades task is built from a local server in the facades layout."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from genlab import cache
from genlab.cache import cache_dir, fetch_file, record_sha256, recorded_sha256, safe_extract
from genlab.config import DataConfig
from genlab.data import download
from genlab.data.download import build_facades_task, facades_available
from genlab.utils import GenlabError

PHOTO, LABEL = (200, 150, 100), (0, 0, 255)


def _jpeg(photo_colour, label_colour, size: int = 16) -> bytes:
    """A pix2pix facades A|B JPEG: the photo on the left, the label map on the right."""
    image = Image.new("RGB", (2 * size, size), photo_colour)
    image.paste(Image.new("RGB", (size, size), label_colour), (size, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


FACADES = _tarball(
    {f"facades/{split}/{n}.jpg": _jpeg(PHOTO, LABEL) for split, count in (("train", 4), ("val", 2), ("test", 3))
     for n in range(1, count + 1)}
)  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits[self.path] = type(self).hits.get(self.path, 0) + 1
        if self.path == "/facades.tar.gz":
            self._send(FACADES)
        elif self.path == "/small.bin":
            self._send(b"0123456789" * 100)
        elif self.path == "/truncated.bin":
            # Announce more bytes than are sent, then close: the client must notice the short transfer.
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "not here")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GENLAB_FACADES_URL", raising=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("GENLAB_CACHE")
    assert cache_dir() == Path("~/.cache/genlab").expanduser()
    assert download.facades_url() == "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"
    monkeypatch.setenv("GENLAB_FACADES_URL", "http://mirror.example/facades.tar.gz")
    assert download.facades_url() == "http://mirror.example/facades.tar.gz"


def test_facades_download_extract_record_and_reuse(server, monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_FACADES_URL", f"{server}/facades.tar.gz")
    config = DataConfig(task="facades", image_size=8)
    assert not facades_available(config)
    task = build_facades_task(config)
    assert (task.spec.kind, task.spec.label_map_fields) == ("paired", ("source",))
    train = task.split("train")
    assert [len(task.split(s)) for s in ("train", "val", "test")] == [4, 2, 3]
    assert train.fields["source"].shape == (4, 3, 8, 8)
    # The archive holds photo | label; the task's source is the label map.
    assert (train.fields["source"][:, 2].float().mean() - 255).abs() < 8
    assert (train.fields["target"][:, 0].float().mean() - PHOTO[0]).abs() < 8
    archive = tmp_path / "cache" / "facades.tar.gz"
    assert archive.read_bytes() == FACADES and facades_available(config)
    assert (tmp_path / "cache" / "facades" / "train" / "1.jpg").is_file()
    records = json.loads((tmp_path / "cache" / "checksums.json").read_text())
    assert records == {"facades.tar.gz": hashlib.sha256(FACADES).hexdigest()}
    # A second fetch verifies the cached file against the record instead of downloading.
    hits = _Handler.hits.get("/facades.tar.gz", 0)
    assert fetch_file(f"{server}/facades.tar.gz", archive) == archive
    assert _Handler.hits["/facades.tar.gz"] == hits


def test_corrupted_cached_file_fails_verification(server, tmp_path):
    destination = tmp_path / "cache" / "small.bin"
    fetch_file(f"{server}/small.bin", destination, expected_size=1000)
    assert _Handler.hits["/small.bin"] >= 1
    assert recorded_sha256(destination) == hashlib.sha256(b"0123456789" * 100).hexdigest()
    destination.write_bytes(b"9" + destination.read_bytes()[1:])  # one flipped byte, same size
    with pytest.raises(GenlabError) as caught:
        fetch_file(f"{server}/small.bin", destination)
    message = str(caught.value)
    assert str(destination) in message and "delete it" in message and "recorded" in message


def test_truncated_transfer_leaves_nothing(server, tmp_path):
    destination = tmp_path / "cache" / "big.bin"
    with pytest.raises(GenlabError) as caught:
        fetch_file(f"{server}/truncated.bin", destination)
    assert "5000" in str(caught.value) and str(destination) in str(caught.value)
    assert not destination.exists() and _leftovers(destination.parent) == []
    assert recorded_sha256(destination) is None


def test_size_and_checksum_mismatch_leave_nothing(server, tmp_path):
    destination = tmp_path / "cache" / "small.bin"
    with pytest.raises(GenlabError, match="size 1000 bytes, expected 999"):
        fetch_file(f"{server}/small.bin", destination, expected_size=999)
    with pytest.raises(GenlabError, match="SHA-256"):
        fetch_file(f"{server}/small.bin", destination, expected_sha256="0" * 64)
    assert _leftovers(destination.parent) == []
    right = hashlib.sha256(b"0123456789" * 100).hexdigest()
    assert fetch_file(f"{server}/small.bin", destination, expected_sha256=right.upper()).is_file()


def test_offline_and_http_errors_say_how_to_fetch_by_hand(server, tmp_path):
    destination = tmp_path / "cache" / "facades.tar.gz"
    with pytest.raises(GenlabError) as caught:
        fetch_file("http://127.0.0.1:9/facades.tar.gz", destination)
    message = str(caught.value)
    assert "by hand" in message and str(destination) in message and "127.0.0.1:9" in message
    with pytest.raises(GenlabError, match="HTTP 404.*by hand"):
        fetch_file(f"{server}/missing.tar.gz", destination)
    assert _leftovers(destination.parent) == []


def test_record_sha256_keeps_the_first_record(tmp_path):
    path = tmp_path / "cache" / "file.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"first")
    first = record_sha256(path)
    path.write_bytes(b"second")
    assert record_sha256(path) == first == hashlib.sha256(b"first").hexdigest()
    with pytest.raises(GenlabError, match="differs"):
        cache.verify_file(path)


@pytest.mark.parametrize("name", ["../escape.txt", "facades/../../escape.txt", "/tmp/absolute.txt"])
def test_unsafe_tar_members_are_rejected(tmp_path, name):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tarball({"facades/train/ok.txt": b"ok", name: b"pwned"}))
    with pytest.raises(GenlabError, match="unsafe member"):
        safe_extract(archive, tmp_path / "out" / "facades")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "facades").exists()
    assert _leftovers(tmp_path / "out") == []


def test_links_in_archives_are_rejected(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("facades/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "links.tar").write_bytes(buffer.getvalue())
    with pytest.raises(GenlabError, match="link"):
        safe_extract(tmp_path / "links.tar", tmp_path / "out")


def test_corrupt_archive_in_cache(server, monkeypatch, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "facades.tar.gz").write_bytes(FACADES[: len(FACADES) // 2])
    monkeypatch.setenv("GENLAB_FACADES_URL", f"{server}/facades.tar.gz")
    with pytest.raises(GenlabError, match="facades.tar.gz.*(corrupt|truncated)"):
        build_facades_task(DataConfig(task="facades", image_size=8)).split("train")
    assert not (tmp_path / "cache" / "facades").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["facades.tar.gz"]  # no half-extracted folder
