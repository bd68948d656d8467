"""Download HAM10000 from Harvard Dataverse with resume and checksum checks, and unpack it atomically.

An interrupted or failed run leaves at most a resumable ``.part`` file in the download cache (holding every
byte that arrived), never a half-written dataset at the destination. Folders get the usual permissions of
the umask, and an archive with a member that would land outside its folder is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import requests
import urllib3
from tqdm.auto import tqdm

from helpers.core.atomic import staging_directory
from helpers.core.errors import DownloadError
from helpers.data.ham10000 import HAM10000_DOI, IMAGE_FOLDERS, MASK_FOLDER, METADATA_FILE

logger = logging.getLogger(__name__)

DATAVERSE_SERVER = "https://dataverse.harvard.edu"
REQUIRED_FILES = (*IMAGE_FOLDERS, Path(METADATA_FILE).stem)
OPTIONAL_FILES = (MASK_FOLDER,)
"""Dataverse file names without extension: a zip unpacks into a folder of that name, a table into NAME.csv."""

TABLE_SUFFIXES = (".csv", ".tab", ".tsv")
_DRIVE = re.compile(r"[A-Za-z]:")
DOWNLOAD_CACHE = ".downloads"
CHUNK_BYTES = 1 << 20
"""The most bytes read (and written to the ``.part`` file) at a time; a read returns what has arrived."""
TIMEOUT_S = (15, 60)
"""Seconds to wait for a connection and between received bytes."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Dataverse dataset: where to fetch it and the checksum it must have."""

    name: str
    url: str
    checksum_type: str
    checksum: str | None
    size: int | None

    @property
    def stem(self) -> str:
        """The name without extension, which names the installed folder or table."""
        return Path(self.name).stem


def _get(url: str, **kwargs) -> requests.Response:
    """GET ``url``; turn an unreachable server or an HTTP error status into a DownloadError."""
    try:
        response = requests.get(url, timeout=TIMEOUT_S, **kwargs)
    except requests.RequestException as error:
        raise DownloadError(
            f"Cannot reach {url}: {error}\nThis machine may have no internet access, or the server is down."
        ) from error
    if response.status_code >= 400:
        response.close()
        raise DownloadError(f"{url} answered HTTP {response.status_code} {response.reason}.")
    return response


def _remote_file(server: str, data_file: dict) -> RemoteFile:
    """Describe a ``dataFile`` entry; an ingested table is fetched as its original upload (md5 covers it)."""
    ingested = "originalFileFormat" in data_file
    checksum = data_file.get("checksum") or {"type": "MD5", "value": data_file.get("md5")}
    return RemoteFile(
        name=(data_file.get("originalFileName") if ingested else None) or data_file["filename"],
        url=f"{server}/api/access/datafile/{data_file['id']}" + ("?format=original" if ingested else ""),
        checksum_type=checksum["type"].replace("-", "").lower(),
        checksum=checksum["value"],
        size=data_file.get("originalFileSize" if ingested else "filesize"),
    )


def list_dataset_files(server: str = DATAVERSE_SERVER, doi: str = HAM10000_DOI) -> dict[str, RemoteFile]:
    """The files of the latest version of a Dataverse dataset, keyed by name without extension."""
    url = f"{server}/api/datasets/:persistentId/"
    with _get(url, params={"persistentId": doi}) as response:
        try:
            entries = response.json()["data"]["latestVersion"]["files"]
            files = [_remote_file(server, entry["dataFile"]) for entry in entries]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DownloadError(
                f"Unexpected answer from {response.url}: not a Dataverse dataset listing ({error!r})"
            ) from error
    return {remote.stem: remote for remote in files}


def _select(remote: dict[str, RemoteFile], files: Iterable[str] | None) -> list[RemoteFile]:
    """The files to fetch: ``files`` (names with or without extension) or the required plus optional ones."""
    if files is None:
        required, optional = list(REQUIRED_FILES), list(OPTIONAL_FILES)
    else:
        required, optional = [Path(name).stem for name in files], []
    missing = [stem for stem in required if stem not in remote]
    if missing:
        raise DownloadError(f"The dataset has no file named {missing}; it lists {sorted(remote)}.")
    for stem in optional:
        if stem not in remote:
            logger.warning("Optional file %s is not in the dataset; continuing without it", stem)
    return [remote[stem] for stem in [*required, *optional] if stem in remote]


def _digest(path: Path, checksum_type: str) -> str:
    hasher = hashlib.new(checksum_type)
    with path.open("rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            hasher.update(block)
    return hasher.hexdigest()


def _stream(remote: RemoteFile, part: Path, progress: bool) -> None:
    """Append the rest of ``remote`` to ``part``, asking the server for the missing byte range only."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset >= remote.size:
        return  # complete already (or too long): the checksum decides
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with _get(remote.url, headers=headers, stream=True) as response:
        if response.status_code != 206:
            offset = 0  # the server sent the whole file
        try:
            with (
                part.open("ab" if offset else "wb") as out,
                tqdm(
                    total=remote.size,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    desc=remote.name,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                    out.write(chunk)  # whatever arrived: a dropped connection loses nothing received
                    bar.update(len(chunk))
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            raise DownloadError(
                f"Download of {remote.name} was interrupted ({error}). The partial file {part} is kept: "
                "run the download again to resume it."
            ) from error


def _fetch(remote: RemoteFile, cache: Path, progress: bool) -> Path:
    """Download ``remote`` into ``cache``, resuming a ``.part`` file; return it once its checksum matches."""
    if not remote.checksum:
        raise DownloadError(f"The server lists no checksum for {remote.name}; refusing an unverifiable file.")
    cache.mkdir(exist_ok=True)
    done = cache / remote.name
    if done.is_file() and _digest(done, remote.checksum_type) == remote.checksum:
        logger.info("Reusing verified %s", done)
        return done
    done.unlink(missing_ok=True)
    part = cache / f"{remote.name}.part"
    _stream(remote, part, progress)
    actual = _digest(part, remote.checksum_type)
    if actual != remote.checksum:
        part.unlink()
        raise DownloadError(
            f"Checksum mismatch for {remote.name}: expected {remote.checksum_type} {remote.checksum}, got "
            f"{actual}. The corrupt download was deleted; run the download again."
        )
    return part.replace(done)


def _unzip(archive: Path, target: Path, progress: bool) -> None:
    """Unpack ``archive`` into folder ``target``, flattening away a single top-level folder in the zip."""
    with staging_directory(target) as unpacked:
        _extract(archive, unpacked, progress)
        entries = list(unpacked.iterdir())
        content = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        content.rename(target)


def _extract(archive: Path, folder: Path, progress: bool) -> None:
    """Extract every member of a zip file but macOS metadata into ``folder``; DownloadError if it is bad,
    empty, or has a member whose path is absolute or climbs out with ``..`` (zipfile would silently
    rewrite it into the folder)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.filename.startswith("__MACOSX/")]
            if not members:
                raise DownloadError(f"{archive} is an empty zip file; delete it and download again.")
            unsafe = [m.filename for m in members if _unsafe_member(m.filename)]
            if unsafe:
                raise DownloadError(
                    f"{archive} has {len(unsafe)} member(s) with an absolute path or '..', which would land "
                    f"outside the dataset folder, e.g. {unsafe[:3]}; nothing was unpacked.\n"
                    "Fix: delete it and download again; if it comes back so, unpack it by hand after "
                    "checking its content."
                )
            for member in tqdm(members, desc=f"Unpacking {archive.name}", unit="file", disable=not progress):
                zipped.extract(member, folder)
    except zipfile.BadZipFile as error:
        raise DownloadError(
            f"{archive} is not a valid zip file ({error}); delete it and download again."
        ) from error


def _unsafe_member(name: str) -> bool:
    """Whether a zip member's path is absolute (``/x``, ``\\x``, ``C:x``) or has a ``..`` part."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name)) or ".." in parts


def _write_csv(table: Path, target: Path) -> None:
    """Copy a CSV table as is; convert Dataverse's tab-separated archival format to CSV."""
    with table.open(encoding="utf-8") as stream:
        header = stream.readline()
    if "\t" in header:
        pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False).to_csv(target, index=False)
    else:
        shutil.copyfile(table, target)


def _install(downloaded: Path, stem: str, staging: Path, progress: bool) -> None:
    """Put one verified download into the official layout inside ``staging``."""
    if downloaded.suffix == ".zip":
        _unzip(downloaded, staging / stem, progress)
    elif downloaded.suffix in TABLE_SUFFIXES:
        _write_csv(downloaded, staging / f"{stem}.csv")
    else:
        shutil.copyfile(downloaded, staging / downloaded.name)


def _manual_fix(server: str, doi: str, dest: Path) -> str:
    """How to get the data without this downloader."""
    return (
        f"Fix: check the internet connection and run the download again, or download the files by hand from "
        f"{server}/dataset.xhtml?persistentId={doi} and unpack them into {dest} in the official layout "
        f"({METADATA_FILE}, {REQUIRED_FILES[0]}/, {REQUIRED_FILES[1]}/, {OPTIONAL_FILES[0]}/), "
        "or set SKINLESION_DATA to a folder that already holds that layout."
    )


def download_ham10000(
    dest: str | Path,
    *,
    server: str = DATAVERSE_SERVER,
    doi: str = HAM10000_DOI,
    files: Iterable[str] | None = None,
    progress: bool = True,
) -> Path:
    """Download, verify and unpack HAM10000 into ``dest`` (official layout) and return ``dest``.

    Downloads resume from ``<dest parent>/.downloads``; ``dest`` appears only once everything is unpacked.
    ``files`` picks Dataverse files by name (default: :data:`REQUIRED_FILES` plus :data:`OPTIONAL_FILES`).
    """
    dest, server = Path(dest).expanduser().resolve(), server.rstrip("/")
    if (dest / METADATA_FILE).is_file():
        logger.info("%s already holds %s; nothing to download", dest, METADATA_FILE)
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise DownloadError(
            f"{dest} exists and is not a HAM10000 folder.\nFix: move it away or pick another dest."
        )
    cache = dest.parent / DOWNLOAD_CACHE
    try:
        with staging_directory(dest) as staging:
            wanted = _select(list_dataset_files(server, doi), files)
            downloads = {remote.stem: _fetch(remote, cache, progress) for remote in wanted}
            for stem, downloaded in downloads.items():
                _install(downloaded, stem, staging, progress)
            staging.replace(dest)
    except (DownloadError, OSError) as error:  # OSError: e.g. disk full while writing or unpacking
        raise DownloadError(f"{error}\n{_manual_fix(server, doi, dest)}") from error
    for downloaded in downloads.values():
        downloaded.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        cache.rmdir()  # only when empty: other downloads may still be resuming there
    return dest
