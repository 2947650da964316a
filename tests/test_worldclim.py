"""Fetching and verifying WorldClim: local sources, a real loopback HTTP server, safe extraction,
and every way a copy can be wrong (checksum, truncation, missing files, empty folder, bad path)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from spectral_collapse import worldclim as wc
from spectral_collapse.worldclim import BIO_FILES, WorldClimError

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


def _linked_copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """A folder of symlinks to the real tifs (cheap), minus `skip`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in BIO_FILES:
        if name not in skip:
            (dst / name).symlink_to(src / name)
    return dst


@pytest.fixture(scope="module")
def real_zip(worldclim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """wc2.1_10m_bio.zip built from the real rasters (stored, not deflated: fast to build)."""
    path = tmp_path_factory.mktemp("zip") / wc.ARCHIVE_NAME
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in BIO_FILES:
            zf.write(worldclim_dir / name, arcname=name)
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `payload`; per the shared `state`, the next `errors` requests get HTTP `status` and the next
    `drops` stop halfway (after announcing the full Content-Length) and close."""

    payload: bytes = b""
    state: dict = {}

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.state["requests"].append(self.headers.get("Range"))
        if self.state["errors"] > 0:
            self.state["errors"] -= 1
            self.send_error(self.state["status"])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        if self.state["drops"] > 0:
            self.state["drops"] -= 1
            self.wfile.write(self.payload[: len(self.payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(self.payload)


@pytest.fixture
def serve() -> Iterator:
    """Start a loopback HTTP server: serve(payload, drops=0, errors=0, status=503) -> (url, state)."""
    servers = []

    def start(payload: bytes, drops: int = 0, errors: int = 0, status: int = 503) -> tuple[str, dict]:
        state = {"drops": drops, "errors": errors, "status": status, "requests": []}
        handler = type("Handler", (_Handler,), {"payload": payload, "state": state})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/{wc.ARCHIVE_NAME}", state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- pins and local sources


def test_pins_match_shared_sha256sums(worldclim_dir: Path) -> None:
    shared = worldclim_dir / "SHA256SUMS"
    if shared.is_file():
        listed = dict(reversed(line.split()) for line in shared.read_text().splitlines() if line.strip())
        assert listed == wc.pinned_checksums()
    assert list(wc.pinned_checksums()) == list(BIO_FILES) and len(BIO_FILES) == 19


def test_verify_real_folder(worldclim_dir: Path) -> None:
    assert wc.verify_folder(worldclim_dir) == wc.pinned_checksums()


def test_config_key_wins_over_env(worldclim_dir: Path, tmp_path: Path) -> None:
    src = wc.resolve_local_source(str(worldclim_dir), str(tmp_path))
    assert src is not None and src.path == str(worldclim_dir) and len(src.files) == 19
    assert wc.resolve_local_source(None, str(worldclim_dir)).path == str(worldclim_dir)
    assert wc.resolve_local_source(None, None) is None
    assert wc.resolve_local_source("", None) is None


def test_nonexistent_worldclim_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WORLDCLIM_DIR.*does not exist"):
        wc.resolve_local_source(None, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"data\.worldclim_dir.*does not exist"):
        wc.resolve_local_source(str(tmp_path / "nowhere"), None)


def test_local_zip_source(real_zip: Path, tmp_path: Path) -> None:
    src = wc.resolve_local_source(None, str(real_zip))
    assert src.kind == "zip" and src.files == [str(real_zip)]
    record = wc.fetch(str(real_zip), wc.OFFICIAL_URL, tmp_path / "dl", progress=False)
    assert record["source"] == "local" and record["files"] == wc.pinned_checksums()
    assert Path(record["raster_dir"]) == (tmp_path / "dl" / wc.FOLDER_NAME).resolve()


# --------------------------------------------------------------------------- bad local copies


def test_checksum_mismatch(worldclim_dir: Path, tmp_path: Path) -> None:
    folder = _linked_copy(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_7.tif",))
    data = bytearray((worldclim_dir / "wc2.1_10m_bio_7.tif").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "wc2.1_10m_bio_7.tif").write_bytes(data)
    with pytest.raises(WorldClimError, match=r"wc2\.1_10m_bio_7\.tif: SHA-256 mismatch.*replace it"):
        wc.verify_folder(folder)


def test_truncated_file(worldclim_dir: Path, tmp_path: Path) -> None:
    folder = _linked_copy(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_3.tif",))
    data = (worldclim_dir / "wc2.1_10m_bio_3.tif").read_bytes()
    (folder / "wc2.1_10m_bio_3.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(WorldClimError, match=r"wc2\.1_10m_bio_3\.tif: truncated.*Re-copy or re-download"):
        wc.verify_folder(folder)


def test_missing_file_18_files(worldclim_dir: Path, tmp_path: Path) -> None:
    folder = _linked_copy(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_12.tif",))
    assert len(list(folder.iterdir())) == 18
    with pytest.raises(WorldClimError, match=r"holds 18 of the 19.*missing: wc2\.1_10m_bio_12\.tif.*Restore"):
        wc.verify_folder(folder)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorldClimError, match="holds none of the 19 GeoTIFFs"):
        wc.verify_folder(tmp_path / "empty")
    with pytest.raises(WorldClimError, match="holds none"):
        wc.fetch(str(tmp_path / "empty"), wc.OFFICIAL_URL, tmp_path / "dl", progress=False)


# --------------------------------------------------------------------------- loopback downloads


def test_download_and_fetch_over_http(serve, real_zip: Path, tmp_path: Path) -> None:
    url, state = serve(real_zip.read_bytes())
    record = wc.fetch(None, url, tmp_path / "dl", progress=False)
    assert record["source"] == "download" and record["origin"] == url
    assert record["files"] == wc.pinned_checksums()
    assert (tmp_path / "dl" / wc.ARCHIVE_NAME).read_bytes() == real_zip.read_bytes()
    # pooch's temporary file was renamed to the archive: nothing else is left in download_dir
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted([wc.ARCHIVE_NAME, wc.FOLDER_NAME])
    assert state["requests"] == [None]


def test_dropped_connection_is_retried(serve, tmp_path: Path) -> None:
    """A body cut short of its Content-Length fails the attempt; pooch retries from byte 0."""
    payload = os.urandom(3 << 20)
    url, state = serve(payload, drops=1)
    out = wc.download(url, tmp_path / "f.zip", retries=3, progress=False)
    assert out.read_bytes() == payload and list(tmp_path.iterdir()) == [out]
    assert state["requests"] == [None, None]  # two whole requests, no Range


def test_server_error_is_retried(serve, tmp_path: Path) -> None:
    payload = os.urandom(1 << 20)
    url, state = serve(payload, errors=1, status=503)
    out = wc.download(url, tmp_path / "f.zip", retries=2, progress=False)
    assert out.read_bytes() == payload and len(state["requests"]) == 2


def test_dropped_connection_gives_up_cleanly(serve, tmp_path: Path) -> None:
    url, state = serve(os.urandom(1 << 20), drops=99)
    with pytest.raises(WorldClimError, match=r"could not download .* after 2 attempts.*data\.url.*WORLDCLIM_DIR"):
        wc.download(url, tmp_path / "f.zip", retries=2, progress=False)
    assert list(tmp_path.iterdir()) == [] and len(state["requests"]) == 2  # neither the archive nor a temporary


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(WorldClimError, match="could not download"):
        wc.download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", retries=1, timeout=2, progress=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("member", ["../evil.txt", "sub/../../evil.txt", "/tmp/evil_abs_member.txt"])
def test_zip_member_escaping_target_is_refused(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("wc2.1_10m_bio_1.tif", b"fine")
        zf.writestr(member, b"escaped")
    target = tmp_path / "out" / wc.FOLDER_NAME
    with pytest.raises(WorldClimError, match="outside the extraction folder"):
        wc.safe_extract(archive, target)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not Path("/tmp/evil_abs_member.txt").exists()
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_fetch_refuses_malicious_download(serve, tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../evil.txt", b"escaped")
    url, _ = serve(archive.read_bytes())
    with pytest.raises(WorldClimError, match="refusing to extract"):
        wc.fetch(None, url, tmp_path / "dl", progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dl" / wc.FOLDER_NAME).exists()


def test_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"<html>error page</html>")
    with pytest.raises(WorldClimError, match="not a readable zip"):
        wc.safe_extract(tmp_path / "x.zip", tmp_path / "out")


# --------------------------------------------------------------------------- the workflow stops


def test_workflow_stops_on_bad_file(worldclim_dir: Path, tmp_path: Path) -> None:
    """With one corrupt file, `snakemake data` fails naming it and builds no store: the configured copy is
    verified when the workflow is parsed, before any job starts (tests/test_cached_runs.py: with results)."""
    work = tmp_path / "wf"
    work.mkdir()
    for item in ("Snakefile", "config.yaml", "workflow", "scripts", "envs"):
        src = REPO_ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item)
        elif src.exists():
            shutil.copy(src, work / item)
    folder = _linked_copy(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_5.tif",))
    (folder / "wc2.1_10m_bio_5.tif").write_bytes(b"\0" * wc.PINNED_SIZES["wc2.1_10m_bio_5.tif"])
    env = {**os.environ, "WORLDCLIM_DIR": str(folder)}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-c1", "data", "--directory", str(work), "--snakefile", str(work / "Snakefile")],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "wc2.1_10m_bio_5.tif: SHA-256 mismatch" in text and "WORLDCLIM_DIR" in text, text[-3000:]
    assert not (work / "results/data/worldclim_verified.json").exists()
    assert not list((work / "results/data").glob("**/worldclim.zarr"))


def test_http_404_is_not_retried(serve, tmp_path: Path) -> None:
    url, state = serve(b"", errors=99, status=404)
    with pytest.raises(WorldClimError, match=rf"{re.escape(url)} answered HTTP 404; check config key data\.url.*WORLDCLIM_DIR"):
        wc.fetch(None, url, tmp_path / "dl", progress=False)
    assert len(state["requests"]) == 1  # a client error is final: no retry, no wait
    assert list((tmp_path / "dl").iterdir()) == []  # neither the archive nor a temporary


def test_file_url(real_zip: Path, tmp_path: Path) -> None:
    record = wc.fetch(None, real_zip.as_uri(), tmp_path / "dl", progress=False)
    assert record["source"] == "download" and record["files"] == wc.pinned_checksums()
    with pytest.raises(WorldClimError, match=r"data\.url.*does not exist"):
        wc.download((tmp_path / "absent.zip").as_uri(), tmp_path / "x.zip")
