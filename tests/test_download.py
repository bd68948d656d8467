"""HAM10000 download against a fake Dataverse on 127.0.0.1: end to end, checksum mismatch, resume, errors,
folder permissions, unsafe archive members."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import stat
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np
import pytest
from builders import HAM_ROWS, noise_image

from helpers.core.errors import DownloadError
from helpers.data import download
from helpers.data.download import DOWNLOAD_CACHE, HAM10000_DOI, download_ham10000
from helpers.data.ham10000 import METADATA_COLUMNS, load_ham10000

METADATA_ROWS = [METADATA_COLUMNS, *HAM_ROWS]
IMAGE_IDS = [row[1] for row in METADATA_ROWS[1:]]
METADATA_CSV = "".join(",".join(row) + "\n" for row in METADATA_ROWS).encode()
METADATA_TAB = "".join("\t".join(f'"{value}"' for value in row) + "\n" for row in METADATA_ROWS).encode()


def _noise_jpeg(seed: int) -> bytes:
    """A small incompressible JPEG, so the zips span several download chunks."""
    return cv2.imencode(".jpg", noise_image(seed, (48, 64)), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _mask_png() -> bytes:
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    return cv2.imencode(".png", mask)[1].tobytes()


@dataclass
class FakeDataverse:
    """Files served the way Dataverse serves them; records every request and can misbehave on purpose."""

    entries: dict[int, dict] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    originals: dict[int, bytes] = field(default_factory=dict)
    corrupt: set[int] = field(default_factory=set)
    cut_once: set[int] = field(default_factory=set)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def add(self, file_id: int, filename: str, body: bytes, original: bytes | None = None) -> None:
        """Serve ``body``; with ``original`` it looks like an ingested table (md5 of the original)."""
        entry = {
            "id": file_id,
            "filename": filename,
            "filesize": len(body),
            "md5": hashlib.md5(body).hexdigest(),
        }
        if original is not None:
            stem = Path(filename).stem
            entry |= {"originalFileFormat": "text/csv", "originalFileName": f"{stem}.csv"}
            entry |= {"originalFileSize": len(original), "md5": hashlib.md5(original).hexdigest()}
            self.originals[file_id] = original
        self.entries[file_id] = entry
        self.bodies[file_id] = body

    def id_of(self, filename: str) -> int:
        return next(i for i, entry in self.entries.items() if entry["filename"] == filename)

    def listing(self) -> bytes:
        files = [{"label": entry["filename"], "dataFile": entry} for entry in self.entries.values()]
        return json.dumps({"status": "OK", "data": {"latestVersion": {"files": files}}}).encode()

    def file_requests(self, file_id: int) -> list[tuple[str, str | None]]:
        return [
            (query, ranges) for path, query, ranges in self.log if path == f"/api/access/datafile/{file_id}"
        ]


def _handler(server_state: FakeDataverse) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **(extra or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            server_state.log.append((url.path, url.query, self.headers.get("Range")))
            if url.path == "/api/datasets/:persistentId/":
                if query.get("persistentId") != [HAM10000_DOI]:
                    return self._send(404, b'{"status":"ERROR","message":"Dataset not found"}')
                return self._send(200, server_state.listing(), {"Content-Type": "application/json"})
            file_id = int(url.path.rsplit("/", 1)[-1]) if url.path.startswith("/api/access/datafile/") else -1
            if file_id not in server_state.entries:
                return self._send(404, b"not found")
            original = query.get("format") == ["original"] and file_id in server_state.originals
            body = (server_state.originals if original else server_state.bodies)[file_id]
            if file_id in server_state.corrupt:
                body = body[:-10] + b"0123456789"
            self._send_file(file_id, body)

        def _send_file(self, file_id: int, body: bytes) -> None:
            start = (
                int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                if "Range" in self.headers
                else 0
            )
            status, extra = (
                (206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}) if start else (200, {})
            )
            if file_id in server_state.cut_once:  # promise the whole rest, send half, hang up
                server_state.cut_once.discard(file_id)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start : start + (len(body) - start) // 2])
                self.close_connection = True
                return
            self._send(status, body[start:], extra)

    return Handler


@pytest.fixture
def dataverse(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDataverse]:
    """A fake Dataverse with the four HAM10000 files, reachable only on 127.0.0.1."""
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(download, "CHUNK_BYTES", 1024)
    state = FakeDataverse()
    images = {image_id: _noise_jpeg(seed) for seed, image_id in enumerate(IMAGE_IDS)}
    state.add(11, "HAM10000_images_part_1.zip", _zip({f"{i}.jpg": images[i] for i in IMAGE_IDS[:2]}))
    part_2 = {f"HAM10000_images_part_2/{i}.jpg": images[i] for i in IMAGE_IDS[2:]}
    state.add(12, "HAM10000_images_part_2.zip", _zip(part_2))
    state.add(13, "HAM10000_metadata.tab", METADATA_TAB, original=METADATA_CSV)
    masks = {f"HAM10000_segmentations_lesion_tschandl/{i}_segmentation.png": _mask_png() for i in IMAGE_IDS}
    state.add(14, "HAM10000_segmentations_lesion_tschandl.zip", _zip(masks))
    state.add(15, "ISIC2018_Task3_Test_Images.zip", b"not wanted")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def _assert_complete_dataset(dest: Path) -> None:
    frame = load_ham10000(dest)
    assert frame["image_id"].tolist() == IMAGE_IDS
    assert frame["mask_path"].notna().all()
    assert (dest / "HAM10000_metadata.csv").read_bytes() == METADATA_CSV


def _assert_nothing_half_written(dest: Path) -> None:
    assert not dest.exists()
    assert sorted(path.name for path in dest.parent.iterdir()) in ([], [DOWNLOAD_CACHE])


def test_good_download_end_to_end(dataverse: FakeDataverse, tmp_path: Path) -> None:
    dest = tmp_path / "data" / "HAM10000"
    assert download_ham10000(dest, server=dataverse.url, progress=False) == dest.resolve()
    _assert_complete_dataset(dest)
    assert sorted(path.name for path in dest.iterdir()) == [
        "HAM10000_images_part_1",
        "HAM10000_images_part_2",
        "HAM10000_metadata.csv",
        "HAM10000_segmentations_lesion_tschandl",
    ]
    assert sorted(path.name for path in dest.parent.iterdir()) == ["HAM10000"]  # cache cleaned up
    assert dataverse.file_requests(13) == [("format=original", None)]
    assert dataverse.file_requests(15) == []
    requests_so_far = len(dataverse.log)
    assert download_ham10000(dest, server=dataverse.url, progress=False) == dest.resolve()
    assert len(dataverse.log) == requests_so_far  # already there: no network at all


def test_tab_separated_metadata_is_converted_to_csv(dataverse: FakeDataverse, tmp_path: Path) -> None:
    dataverse.originals.clear()
    dataverse.add(13, "HAM10000_metadata.tab", METADATA_TAB)
    dest = tmp_path / "HAM10000"
    download_ham10000(dest, server=dataverse.url, progress=False)
    _assert_complete_dataset(dest)


def test_checksum_mismatch_names_file_leaves_nothing_and_keeps_verified_files(
    dataverse: FakeDataverse, tmp_path: Path
) -> None:
    file_id = dataverse.id_of("HAM10000_images_part_2.zip")
    dataverse.corrupt.add(file_id)
    served = dataverse.bodies[file_id][:-10] + b"0123456789"
    dest = tmp_path / "HAM10000"
    with pytest.raises(DownloadError) as error:
        download_ham10000(dest, server=dataverse.url, progress=False)
    message = str(error.value)
    assert "HAM10000_images_part_2.zip" in message
    assert dataverse.entries[file_id]["md5"] in message and hashlib.md5(served).hexdigest() in message
    assert "run the download again" in message
    _assert_nothing_half_written(dest)
    assert not list((tmp_path / DOWNLOAD_CACHE).glob("*.part"))
    dataverse.corrupt.clear()
    download_ham10000(dest, server=dataverse.url, progress=False)
    _assert_complete_dataset(dest)
    assert (
        len(dataverse.file_requests(dataverse.id_of("HAM10000_images_part_1.zip"))) == 1
    )  # verified copy reused


def test_interrupted_transfer_resumes_with_a_range_request(dataverse: FakeDataverse, tmp_path: Path) -> None:
    file_id = dataverse.id_of("HAM10000_images_part_1.zip")
    dataverse.cut_once.add(file_id)
    dest = tmp_path / "HAM10000"
    with pytest.raises(DownloadError, match="interrupted") as error:
        download_ham10000(dest, server=dataverse.url, progress=False)
    assert "resume" in str(error.value)
    _assert_nothing_half_written(dest)
    part = tmp_path / DOWNLOAD_CACHE / "HAM10000_images_part_1.zip.part"
    kept = part.stat().st_size
    assert kept == len(dataverse.bodies[file_id]) // 2  # every byte that arrived, not only whole chunks
    download_ham10000(dest, server=dataverse.url, progress=False)
    assert dataverse.file_requests(file_id) == [("", None), ("", f"bytes={kept}-")]
    _assert_complete_dataset(dest)


def test_unreachable_server_explains_offline_fix(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = tmp_path / "HAM10000"
    with pytest.raises(DownloadError) as error:
        download_ham10000(dest, server=f"http://127.0.0.1:{port}", progress=False)
    message = str(error.value)
    assert "Cannot reach" in message and "internet" in message
    assert "SKINLESION_DATA" in message and str(dest.resolve()) in message
    _assert_nothing_half_written(dest)


def test_http_error_and_missing_required_file(dataverse: FakeDataverse, tmp_path: Path) -> None:
    dest = tmp_path / "HAM10000"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_ham10000(dest, server=dataverse.url, doi="doi:10.0000/NOPE", progress=False)
    del dataverse.entries[dataverse.id_of("HAM10000_images_part_2.zip")]
    with pytest.raises(DownloadError, match="HAM10000_images_part_2"):
        download_ham10000(dest, server=dataverse.url, progress=False)
    _assert_nothing_half_written(dest)


def test_missing_optional_masks_and_explicit_file_choice(dataverse: FakeDataverse, tmp_path: Path) -> None:
    del dataverse.entries[dataverse.id_of("HAM10000_segmentations_lesion_tschandl.zip")]
    dest = download_ham10000(tmp_path / "HAM10000", server=dataverse.url, progress=False)
    assert load_ham10000(dest)["mask_path"].isna().all()
    chosen = ["HAM10000_metadata.csv", "HAM10000_images_part_1.zip"]
    only = download_ham10000(tmp_path / "subset", server=dataverse.url, files=chosen, progress=False)
    assert sorted(path.name for path in only.iterdir()) == ["HAM10000_images_part_1", "HAM10000_metadata.csv"]


def test_refuses_a_foreign_non_empty_dest(dataverse: FakeDataverse, tmp_path: Path) -> None:
    dest = tmp_path / "HAM10000"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match="not a HAM10000 folder"):
        download_ham10000(dest, server=dataverse.url, progress=False)
    assert [path.name for path in dest.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_folders_and_files_get_the_permissions_of_the_umask(
    dataverse: FakeDataverse, tmp_path: Path, umask: int
) -> None:
    previous = os.umask(umask)
    try:
        dest = download_ham10000(tmp_path / "HAM10000", server=dataverse.url, progress=False)
    finally:
        os.umask(previous)
    entries = [dest, *dest.rglob("*")]
    modes = {path.is_dir(): set() for path in entries}
    for path in entries:
        modes[path.is_dir()].add(stat.S_IMODE(path.stat().st_mode))
    assert modes == {True: {0o777 & ~umask}, False: {0o666 & ~umask}}


@pytest.mark.parametrize(
    "member",
    ["../escaped.jpg", "/tmp/escaped.jpg", "HAM10000_images_part_1/../../escaped.jpg", "C:escaped.jpg"],
)
def test_archive_member_outside_its_folder_is_refused(
    dataverse: FakeDataverse, tmp_path: Path, member: str
) -> None:
    dataverse.add(11, "HAM10000_images_part_1.zip", _zip({"ISIC_0000001.jpg": _noise_jpeg(0), member: b"x"}))
    dest = tmp_path / "data" / "HAM10000"
    with pytest.raises(DownloadError, match="absolute path or '..'") as error:
        download_ham10000(dest, server=dataverse.url, progress=False)
    assert member in str(error.value) and "nothing was unpacked" in str(error.value)
    _assert_nothing_half_written(dest)
    assert not list(tmp_path.rglob("escaped.jpg")) and not Path("/tmp/escaped.jpg").exists()
