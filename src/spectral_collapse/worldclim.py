"""WorldClim 2.1 (10', 19 bioclimatic variables): locate or download, extract safely, verify.

Every later stage trusts these 19 files, so nothing is used until all of them match the pinned
SHA-256 checksums below; each failure names the file and what to do about it.

Content, not path: the data's identity is its 19 checksums. The verified record
(results/data/worldclim_verified.json, `verified_record`) holds nothing else, so the same files reached
through another folder, a symlink, a zip or the download are the same data, and a change of source never
invalidates anything built from them. Where the files are is decided at run time (`locate_rasters`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from spectral_collapse.provenance import atomic_path, sha256_file
from spectral_collapse.sources import GridStack, SourceError, Variables

log = logging.getLogger(__name__)

N_BIO = 19
ARCHIVE_NAME = "wc2.1_10m_bio.zip"
FOLDER_NAME = "wc2.1_10m_bio"
OFFICIAL_URL = "https://geodata.ucdavis.edu/climate/worldclim/2_1/base/wc2.1_10m_bio.zip"
CONFIG_KEY = "data.worldclim_dir"
ENV_VAR = "WORLDCLIM_DIR"
DATASET = "WorldClim 2.1, 10 arc-minutes, bioclimatic variables bio1-bio19"

# Pinned from ../shared/worldclim/wc2.1_10m_bio/SHA256SUMS (sha256sum format), plus each file's size
# in bytes so that a truncated copy is reported as truncated rather than as a bare mismatch.
PINNED_SHA256SUMS = """\
f61633ffac9d44ed220442b3f7171a06f931726668bfbe9d07d53700b257d8cf  wc2.1_10m_bio_1.tif
b9068d839a0f5973ff171eb230bccf920c00c8a357356a575ecae1736ea9f218  wc2.1_10m_bio_2.tif
56f380fd589be740d1d122fa86956d147cf1d9126d76cad4f6eef3df4987f75d  wc2.1_10m_bio_3.tif
a1bacac2f3d645284ee506fdde14226d7c2cafd5997a2af2f802f45e3550ae19  wc2.1_10m_bio_4.tif
32e02d85868734c32547da70cf9c620f4739a3cf5dbc4f2b751e16ebb2338ae1  wc2.1_10m_bio_5.tif
7cc728620cba21564bbed19d5fe6268a0ef0bd2578b757a3acf45ef65b8b4007  wc2.1_10m_bio_6.tif
f43241c128d8f85222e2d971808f19eb8115ce012b8aa23c51aab3797b47fe5d  wc2.1_10m_bio_7.tif
e74665f9c39a96eabeb0a4153ee5e4591b9d67c7e834970a3ef1a825ae2a6693  wc2.1_10m_bio_8.tif
1c2be92eb77794d1d52a902815da132e9aa1769a4c74cdcda932d03110ebafa2  wc2.1_10m_bio_9.tif
cf01e8d20c539310225f9d7af1d9e3492898f0a43c3a2ed243d42fbccbe7dc51  wc2.1_10m_bio_10.tif
def192615646168f2651ea6ab5873ae2f51f56745de1028493eeac7be2f0b5a0  wc2.1_10m_bio_11.tif
1e823e951ace0186c6eadd7368b4d0385c8f51cc952282c0f2d640bf7790fea5  wc2.1_10m_bio_12.tif
ff1e4e0d5c20f543dacf27fba2cdd72af65892ab2031371001396a43ae80a5f9  wc2.1_10m_bio_13.tif
a759ceb007d02574128148af7f47ab578b18a07e2f5624725d7f222c3c457812  wc2.1_10m_bio_14.tif
6e16bf2e37752932cdeb2b209d1e06ba1a154ac012c372e56bc98e774cdfa6c6  wc2.1_10m_bio_15.tif
0db333e89dce4057e23610fd3e3aa12d308b36ea14a3fb718fa513281baf1296  wc2.1_10m_bio_16.tif
fbbbf68af8a2af5d8ec3c43c5a322e2b7f9bfc128f457274d567f08a72d7b86f  wc2.1_10m_bio_17.tif
4b1487b7b6e7816d94fc932fad0a8b0968aec0a96268976af35be7378ae33c10  wc2.1_10m_bio_18.tif
8b9d79e73870ba4dbc1e1c8e1af6ef1c8e56653add3ba2bde60ea5806a96013c  wc2.1_10m_bio_19.tif
"""
PINNED_SIZES = {
    "wc2.1_10m_bio_1.tif": 3790814, "wc2.1_10m_bio_2.tif": 3676841, "wc2.1_10m_bio_3.tif": 3688862,
    "wc2.1_10m_bio_4.tif": 3765363, "wc2.1_10m_bio_5.tif": 3294017, "wc2.1_10m_bio_6.tif": 3389668,
    "wc2.1_10m_bio_7.tif": 3488376, "wc2.1_10m_bio_8.tif": 3716591, "wc2.1_10m_bio_9.tif": 3763240,
    "wc2.1_10m_bio_10.tif": 3665323, "wc2.1_10m_bio_11.tif": 3719101, "wc2.1_10m_bio_12.tif": 1963655,
    "wc2.1_10m_bio_13.tif": 1513593, "wc2.1_10m_bio_14.tif": 1005665, "wc2.1_10m_bio_15.tif": 3496057,
    "wc2.1_10m_bio_16.tif": 1745906, "wc2.1_10m_bio_17.tif": 1332407, "wc2.1_10m_bio_18.tif": 1542436,
    "wc2.1_10m_bio_19.tif": 1584020,
}

# (short name, long name, units) per layer; units as WorldClim 2.1 ships them (temperatures in degC, not x10).
BIO_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("bio1", "Annual Mean Temperature", "degC"),
    ("bio2", "Mean Diurnal Range (mean of monthly (max temp - min temp))", "degC"),
    ("bio3", "Isothermality (bio2/bio7 x 100)", "%"),
    ("bio4", "Temperature Seasonality (standard deviation x 100)", "degC"),
    ("bio5", "Max Temperature of Warmest Month", "degC"),
    ("bio6", "Min Temperature of Coldest Month", "degC"),
    ("bio7", "Temperature Annual Range (bio5-bio6)", "degC"),
    ("bio8", "Mean Temperature of Wettest Quarter", "degC"),
    ("bio9", "Mean Temperature of Driest Quarter", "degC"),
    ("bio10", "Mean Temperature of Warmest Quarter", "degC"),
    ("bio11", "Mean Temperature of Coldest Quarter", "degC"),
    ("bio12", "Annual Precipitation", "mm"),
    ("bio13", "Precipitation of Wettest Month", "mm"),
    ("bio14", "Precipitation of Driest Month", "mm"),
    ("bio15", "Precipitation Seasonality (coefficient of variation)", "%"),
    ("bio16", "Precipitation of Wettest Quarter", "mm"),
    ("bio17", "Precipitation of Driest Quarter", "mm"),
    ("bio18", "Precipitation of Warmest Quarter", "mm"),
    ("bio19", "Precipitation of Coldest Quarter", "mm"),
)


# The store's title and citation (CF attributes) for this source.
SOURCE = {"title": "WorldClim 2.1 bioclimatic variables, 10 arc-minutes, 1970-2000",
          "source": "WorldClim 2.1 (Fick & Hijmans 2017, doi:10.1002/joc.5086), wc2.1_10m_bio.zip"}


class WorldClimError(SourceError):
    """Missing, truncated, corrupt or unreachable WorldClim input; the message names the file and the fix."""


def bio_filename(index: int) -> str:
    """File name of layer `index` (1..19) in the official archive."""
    return f"wc2.1_10m_bio_{index}.tif"


BIO_FILES: tuple[str, ...] = tuple(bio_filename(i) for i in range(1, N_BIO + 1))


def pinned_checksums() -> dict[str, str]:
    """The 19 pinned SHA-256 sums, keyed by file name, in layer order."""
    sums = {}
    for line in PINNED_SHA256SUMS.splitlines():
        digest, name = line.split()
        sums[name] = digest
    return {name: sums[name] for name in BIO_FILES}


# --------------------------------------------------------------------------- local source


@dataclass(frozen=True)
class LocalSource:
    """A local WorldClim copy: `path` is the folder or the zip; `files` the tifs (or the zip) found there;
    `origin` names where it was configured (for messages)."""

    path: str
    files: list[str] = field(default_factory=list)
    kind: str = "folder"  # "folder" | "zip"
    origin: str = ""


def resolve_local_source(config_value: str | None, env_value: str | None) -> LocalSource | None:
    """The local copy named by config `data.worldclim_dir` (wins) or $WORLDCLIM_DIR; None to download.

    Only existence is checked here; `locate_rasters` checks completeness and checksums when a job reads them.
    """
    for value, origin in ((config_value, f"config key {CONFIG_KEY}"), (env_value, f"environment variable {ENV_VAR}")):
        if value is None or str(value).strip() == "":
            continue
        path = Path(str(value)).expanduser().resolve()
        if not path.exists():
            raise ValueError(
                f"{origin} = {value!r}: {path} does not exist. Point it at a folder holding "
                f"{BIO_FILES[0]} ... {BIO_FILES[-1]} (or at {ARCHIVE_NAME}), or unset it to download "
                "the official archive."
            )
        return _local_source(path, origin=f"{origin} = {value!r}")
    return None


def _local_source(path: Path, origin: str = "") -> LocalSource:
    if path.is_file():
        return LocalSource(str(path), [str(path)], kind="zip", origin=origin)
    tifs = [path / name for name in BIO_FILES if (path / name).is_file()]
    if not tifs and (path / ARCHIVE_NAME).is_file():
        return LocalSource(str(path), [str(path / ARCHIVE_NAME)], kind="zip", origin=origin)
    return LocalSource(str(path), [str(t) for t in tifs], kind="folder", origin=origin)


def verify_local_source(src: LocalSource) -> dict[str, str]:
    """Check a configured local copy (folder or zip) against the 19 pins; return {file name: sha256}. Raises a
    WorldClimError that names the file, the configured path and the way out (`bad_copy_error`)."""
    try:
        if src.kind == "zip":
            return verify_zip(src.files[0])
        return verify_folder(src.path)
    except WorldClimError as exc:
        raise bad_copy_error(src, exc) from exc


def bad_copy_error(src: LocalSource, exc: WorldClimError) -> WorldClimError:
    """The error of a configured copy that fails verification: the file, where it was configured, the way out."""
    where = src.origin or src.path
    return WorldClimError(
        f"{where}: the WorldClim copy there fails verification against the pinned checksums. {exc} "
        f"The job stopped before writing anything; no result was touched. Fix the copy, point {ENV_VAR} / "
        f"{CONFIG_KEY} at a good one, or unset both to keep using the already verified data "
        "(results/data/worldclim_verified.json)."
    )


# --------------------------------------------------------------------------- verification


def check_complete(folder: str | os.PathLike) -> None:
    """Raise if the folder does not hold all 19 GeoTIFFs, naming the missing ones."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WorldClimError(
            f"WorldClim folder {folder} does not exist or is not a folder. Set {ENV_VAR} or {CONFIG_KEY} "
            f"to a folder holding {BIO_FILES[0]} ... {BIO_FILES[-1]}."
        )
    missing = [name for name in BIO_FILES if not (folder / name).is_file()]
    if len(missing) == N_BIO:
        raise WorldClimError(
            f"WorldClim folder {folder} holds none of the 19 GeoTIFFs ({BIO_FILES[0]} ... {BIO_FILES[-1]}): "
            f"copy them (or {ARCHIVE_NAME}) there, or point {ENV_VAR} / {CONFIG_KEY} at the right folder."
        )
    if missing:
        raise WorldClimError(
            f"WorldClim folder {folder} holds {N_BIO - len(missing)} of the 19 GeoTIFFs; missing: "
            f"{', '.join(missing)}. Restore the missing file(s) from the official archive {OFFICIAL_URL}."
        )


def verify_file(path: str | os.PathLike, expected_sha256: str, expected_size: int | None = None) -> str:
    """Check one file's size and SHA-256 against the pins; return its digest."""
    path = Path(path)
    if not path.is_file():
        raise WorldClimError(f"{path.name}: missing ({path}). Restore it from the official archive {OFFICIAL_URL}.")
    size = path.stat().st_size
    if expected_size is not None and size < expected_size:
        raise WorldClimError(
            f"{path.name}: truncated ({size} of {expected_size} bytes) at {path}. "
            f"Re-copy or re-download it from {OFFICIAL_URL}."
        )
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise WorldClimError(
            f"{path.name}: SHA-256 mismatch at {path} (got {digest}, pinned {expected_sha256}; {size} bytes). "
            f"The file is corrupt or not WorldClim 2.1 10'; replace it with the one from {OFFICIAL_URL}."
        )
    return digest


def verify_folder(folder: str | os.PathLike) -> dict[str, str]:
    """Verify all 19 GeoTIFFs in `folder` against the pins; return {file name: sha256}."""
    check_complete(folder)
    pins = pinned_checksums()
    return {name: verify_file(Path(folder) / name, pins[name], PINNED_SIZES.get(name)) for name in BIO_FILES}


def verify_zip(archive: str | os.PathLike) -> dict[str, str]:
    """Verify the 19 GeoTIFFs inside a zip (members streamed, nothing extracted); return {file name: sha256}."""
    import hashlib

    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WorldClimError(f"{archive.name}: not a readable zip archive ({exc}) at {archive}.") from exc
    pins = pinned_checksums()
    with zf:
        members = {Path(m.filename).name: m for m in zf.infolist() if not m.is_dir()}
        missing = [name for name in BIO_FILES if name not in members]
        if missing:
            raise WorldClimError(
                f"{archive.name} holds {N_BIO - len(missing)} of the 19 GeoTIFFs; missing: {', '.join(missing)}. "
                f"Use the official archive {OFFICIAL_URL}."
            )
        out = {}
        for name in BIO_FILES:
            member, expected = members[name], PINNED_SIZES.get(name)
            if expected is not None and member.file_size < expected:
                raise WorldClimError(
                    f"{name}: truncated ({member.file_size} of {expected} bytes) in {archive}. "
                    f"Re-copy or re-download it from {OFFICIAL_URL}."
                )
            digest = hashlib.sha256()
            with zf.open(member) as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            if digest.hexdigest() != pins[name]:
                raise WorldClimError(
                    f"{name}: SHA-256 mismatch in {archive} (got {digest.hexdigest()}, pinned {pins[name]}). "
                    f"The file is corrupt or not WorldClim 2.1 10'; replace the archive with the one from {OFFICIAL_URL}."
                )
            out[name] = digest.hexdigest()
    return out


# --------------------------------------------------------------------------- the verified record


def verified_record(files: Mapping[str, str]) -> dict[str, Any]:
    """Content of results/data/worldclim_verified.json: the data's identity, i.e. its 19 checksums.

    Deliberately no path, source or URL: the same files reached another way give the same bytes, so
    Snakemake (which compares input checksums of small files) sees no change downstream."""
    return {"dataset": DATASET, "files": {name: files[name] for name in BIO_FILES}}


def record_is_current(path: str | os.PathLike) -> bool:
    """True when `path` is a verified record whose 19 checksums are the pinned ones (any extra keys,
    e.g. the raster_dir/source/origin of records written before issue 11, are ignored)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("files") == pinned_checksums()


# --------------------------------------------------------------------------- zip extraction


def _member_target(target: Path, member: zipfile.ZipInfo, archive: Path) -> Path:
    """Where a member would land; refuse absolute paths, `..` escapes and symlinks."""
    name = member.filename
    dest = (target / name).resolve()
    mode = (member.external_attr >> 16) & 0o170000
    if name.startswith(("/", "\\")) or os.path.isabs(name) or not dest.is_relative_to(target.resolve()):
        raise WorldClimError(
            f"{archive.name}: member {name!r} would be written outside the extraction folder {target}; "
            "refusing to extract. The archive is malformed or malicious; download it again from the official source."
        )
    if mode == 0o120000:
        raise WorldClimError(f"{archive.name}: member {name!r} is a symbolic link; refusing to extract.")
    return dest


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract `archive` into `target` (created atomically) and return the folder holding the 19 tifs.

    Every member is checked before anything is written, so a refused archive leaves nothing behind.
    """
    archive, target = Path(archive), Path(target)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WorldClimError(f"{archive.name}: not a readable zip archive ({exc}). Delete {archive} and download it again.") from exc
    with zf, atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        members = zf.infolist()
        for member in members:
            _member_target(tmp, member, archive)
        for member in members:
            dest = _member_target(tmp, member, archive)
            if member.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return raster_folder(target)


def raster_folder(root: Path) -> Path:
    """The folder under `root` that holds wc2.1_10m_bio_1.tif (archives may nest one level)."""
    if (root / BIO_FILES[0]).is_file():
        return root
    hits = sorted(root.rglob(BIO_FILES[0]))
    return hits[0].parent if hits else root


# --------------------------------------------------------------------------- download


def download(url: str, dest: str | os.PathLike, retries: int = 5, timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch `url` to `dest` with pooch: streamed to a temporary name in dest's folder, renamed only when complete.

    pooch retries a dropped or failed connection (`retries` attempts in all, waiting 1 s, 2 s, ... between
    them) and restarts from byte 0 (the archive is ~50 MB: no Range resume). No archive hash is pinned
    (known hash None): the 19 raster checksums verified after extraction are the data's identity. Every
    failure leaves neither `dest` nor a temporary file and raises a WorldClimError naming the URL and the fix.
    """
    import pooch
    import requests

    dest = Path(dest)
    fetcher = pooch.create(
        path=dest.parent, base_url="", registry={dest.name: None}, urls={dest.name: url}, retry_if_failed=retries - 1
    )
    downloader = _copy_file_url if url.startswith("file://") else _http_downloader(timeout, progress)
    try:
        return Path(fetcher.fetch(dest.name, downloader=downloader))
    except requests.RequestException as exc:
        raise WorldClimError(
            f"could not download {url} to {dest} after {retries} attempts (last error: {exc}). Check the network "
            f"and config key data.url, or download {ARCHIVE_NAME} by hand and set {ENV_VAR} (or {CONFIG_KEY}) to it, "
            f"or put it in {dest.parent} (config key data.download_dir)."
        ) from exc


def _http_downloader(timeout: float, progress: bool) -> Callable[[str, str, Any], None]:
    """pooch's HTTPDownloader, except that a client error (4xx but 429) fails at once: retrying cannot fix it."""
    import pooch
    import requests

    http = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)

    def get(url: str, output_file: str, fetcher: Any) -> None:
        try:
            http(url, output_file, fetcher)
        except requests.RequestException as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status is not None and 400 <= status < 500 and status != 429:
                raise WorldClimError(
                    f"{url} answered HTTP {status}; check config key data.url, or download {ARCHIVE_NAME} "
                    f"by hand and set {ENV_VAR} (or {CONFIG_KEY}) to it."
                ) from exc
            log.warning("download of %s failed: %s", url, exc)
            raise

    return get


def _copy_file_url(url: str, output_file: str, fetcher: Any = None) -> None:
    """A pooch downloader for file:// URLs (the config schema allows them: mirrors, offline tests)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    src = Path(url2pathname(urlparse(url).path))
    if not src.is_file():
        raise WorldClimError(f"config key data.url = {url!r}: {src} does not exist; fix the URL or unset it, or set "
                             f"{ENV_VAR} (or {CONFIG_KEY}) to a local copy.")
    shutil.copyfile(src, output_file)


# --------------------------------------------------------------------------- the fetch step


def locate_rasters(
    local_source: LocalSource | str | None, url: str, download_dir: str | os.PathLike, progress: bool = True,
    allow_download: bool = True,
) -> tuple[Path, dict[str, str], dict[str, str]]:
    """Find the 19 rasters and verify them: (folder, provenance {"source", "origin"}, {file name: sha256}).

    Order: the configured local copy (a folder is used in place, a zip is extracted into
    `download_dir`), else an earlier extraction in `download_dir`, else an earlier download there,
    else a fresh download of `url`. Run-time only: where the files are found is never part of any
    Snakemake input or param, so finding them elsewhere next time reruns nothing.
    """
    download_dir = Path(download_dir)
    extracted = download_dir / FOLDER_NAME
    src = None
    if local_source is not None:
        src = local_source if isinstance(local_source, LocalSource) else _local_source(Path(local_source).resolve())
        if src.kind == "folder":
            folder, info = Path(src.path), {"source": "local", "origin": src.path}
        else:
            folder = _extracted_or_extract(src.files[0], extracted)
            info = {"source": "local", "origin": src.files[0]}
    elif extracted.is_dir() and (raster_folder(extracted) / BIO_FILES[0]).is_file():
        folder, info = raster_folder(extracted), {"source": "download", "origin": str(extracted.resolve())}
        log.info("using the earlier extraction in %s (no download)", folder)
    elif (download_dir / ARCHIVE_NAME).is_file():
        folder = safe_extract(download_dir / ARCHIVE_NAME, extracted)
        info = {"source": "download", "origin": str((download_dir / ARCHIVE_NAME).resolve())}
        log.info("using the earlier download %s (no download)", download_dir / ARCHIVE_NAME)
    elif allow_download:
        archive = download(url, download_dir / ARCHIVE_NAME, progress=progress)
        folder, info = safe_extract(archive, extracted), {"source": "download", "origin": url}
    else:
        raise WorldClimError(
            f"no WorldClim copy found: {ENV_VAR} and {CONFIG_KEY} are unset and {download_dir} holds no "
            f"{ARCHIVE_NAME}. Set {ENV_VAR} to a folder holding {BIO_FILES[0]} ... {BIO_FILES[-1]}."
        )
    try:
        return folder.resolve(), info, verify_folder(folder)
    except WorldClimError as exc:
        if src is None:
            raise
        raise bad_copy_error(src, exc) from exc


def _extracted_or_extract(archive: str | os.PathLike, extracted: Path) -> Path:
    """The folder of an earlier extraction of the same archive when it verifies, else a fresh extraction."""
    if extracted.is_dir():
        try:
            folder = raster_folder(extracted)
            verify_folder(folder)
            return folder
        except WorldClimError:
            pass
    return safe_extract(archive, extracted)


def fetch(local_source: str | None, url: str, download_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Locate (local folder or zip, earlier download) or download and extract WorldClim, verify it.

    Returns {"raster_dir", "source", "origin", "files"}; only `files` (`verified_record`) is written to
    results/data/worldclim_verified.json (docs/contracts.md section 1), the rest goes to the logs."""
    folder, info, files = locate_rasters(local_source, url, download_dir, progress=progress)
    return {"raster_dir": str(folder), **info, "files": files}


# The 10' global grid every WorldClim 2.1 layer is on (the data's PROVENANCE.md, beside the rasters in shared/worldclim/):
# 1080 x 2160 cells, EPSG:4326.
GRID_SHAPE = (1080, 2160)
GRID_RES = 1.0 / 6.0
GRID_ORIGIN = (-180.0, 90.0)  # west edge, north edge


# --------------------------------------------------------------------------- reading the rasters (rule build_store)


def _fix(path: Path) -> str:
    return f"Replace {path} with {path.name} from the official WorldClim 2.1 10' archive (wc2.1_10m_bio.zip)."


def _open_layer(path: Path) -> Any:
    """Open one GeoTIFF lazily with rioxarray and check it is on the 10' global grid."""
    import rioxarray  # noqa: F401  (registers .rio)

    try:
        with warnings.catch_warnings():  # affine's `*` deprecation inside rioxarray 0.19: not ours to fix
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            da = rioxarray.open_rasterio(path, masked=True, cache=False, lock=False)
            _ = da.rio.transform()
    except Exception as exc:  # rasterio raises several types for unreadable files
        raise WorldClimError(f"{path.name}: not a readable GeoTIFF ({exc}). {_fix(path)}") from exc
    _check_grid(da, path)
    return da


def _check_grid(da: Any, path: Path) -> None:
    """Refuse a layer on another grid (shape, resolution, extent or CRS) before any data is read."""
    shape = tuple(da.shape[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        t = da.rio.transform()
    crs = da.rio.crs
    problems = []
    if da.sizes.get("band", 1) != 1:
        problems.append(f"{da.sizes['band']} bands (expected 1)")
    if shape != GRID_SHAPE:
        problems.append(f"shape {shape[0]}x{shape[1]} (expected {GRID_SHAPE[0]}x{GRID_SHAPE[1]})")
    if not np.allclose([t.a, -t.e, t.c, t.f, t.b, t.d], [GRID_RES, GRID_RES, *GRID_ORIGIN, 0, 0], atol=1e-6):
        problems.append(f"transform {tuple(round(v, 6) for v in t[:6])} (expected 10' cells from -180, 90)")
    if crs is None or crs.to_epsg() != 4326:
        problems.append(f"CRS {crs} (expected EPSG:4326)")
    if problems:
        raise WorldClimError(
            f"{path.name} is on another grid than the WorldClim 2.1 10' global grid: {'; '.join(problems)}. {_fix(path)}"
        )


def read_rasters(folder: str | os.PathLike) -> "GridStack":
    """The 19 layers as float32 (19, lat, lon) with NaN for nodata, on their lat and lon cell centres.

    All headers are checked first, so a bad file fails fast and before any large read.
    """
    folder = Path(folder)
    check_complete(folder)
    layers = [_open_layer(folder / name) for name in BIO_FILES]
    data = np.empty((len(BIO_FILES), *GRID_SHAPE), dtype=np.float32)
    try:
        for i, (name, da) in enumerate(zip(BIO_FILES, layers)):
            try:
                data[i] = da.values[0]
            except Exception as exc:
                detail = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
                raise WorldClimError(f"{name}: cannot read its pixels ({detail}); the file is corrupt. {_fix(folder / name)}") from exc
        lat, lon = layers[0]["y"].values.astype(np.float64), layers[0]["x"].values.astype(np.float64)
    finally:
        for da in layers:
            da.close()
    names, long_names, units = zip(*BIO_VARIABLES)
    return GridStack(data, lat, lon, Variables(names, long_names, units), "EPSG:4326")
