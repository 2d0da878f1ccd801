"""Uploaded files kept server-side between the preview and the confirmation."""

import json
import pickle
import re
import secrets
import time
import unicodedata
from pathlib import Path

from crm.text import CONTROL

UPLOAD_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
UPLOAD_MAX_AGE = 24 * 3600


def clean_filename(name: str | None) -> str:
    """The base name of an uploaded file, safe to show and to put in the audit log."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = CONTROL.sub("", base)
    # Nor format characters: a right-to-left override shows "fil\u202etxt.exe" as
    # "filexe.txt".
    base = "".join(ch for ch in base if unicodedata.category(ch) != "Cf").strip()
    return base[:100] or "upload"


def save_upload(directory: Path, data: bytes, filename: str, user_id: int) -> str:
    """Keep an uploaded file server-side; returns the random token that names it."""
    directory.mkdir(parents=True, exist_ok=True)
    _remove_expired(directory)
    token = secrets.token_urlsafe(32)
    (directory / f"{token}.upload").write_bytes(data)
    meta = {"filename": clean_filename(filename), "user_id": user_id, "at": time.time()}
    (directory / f"{token}.json").write_text(json.dumps(meta))
    return token


def load_upload(directory: Path, token: str | None, user_id: int) -> tuple[bytes, str] | None:
    """The bytes and file name behind `token`, if it is well-formed, fresh and `user_id`'s."""
    if not token or not UPLOAD_TOKEN.fullmatch(token):
        return None
    try:
        meta = json.loads((directory / f"{token}.json").read_text())
        data = (directory / f"{token}.upload").read_bytes()
    except (OSError, ValueError):
        return None
    if meta.get("user_id") != user_id or time.time() - meta.get("at", 0) > UPLOAD_MAX_AGE:
        return None
    return data, meta.get("filename") or "upload"


def save_plan(directory: Path, token: str, plan, register_state: tuple) -> None:
    """Keep the plan made from an upload, with the state of the register it was made on,
    so the preview is built once (20,000 rows take seconds) and confirming does not redo
    it while nothing changed. Pickle, since only this server writes and reads the file."""
    if UPLOAD_TOKEN.fullmatch(token):
        payload = pickle.dumps((register_state, plan), protocol=pickle.HIGHEST_PROTOCOL)
        (directory / f"{token}.plan").write_bytes(payload)


def load_plan(directory: Path, token: str, register_state: tuple):
    """The plan kept for `token` when the register is still as it was; else None."""
    if not UPLOAD_TOKEN.fullmatch(token or ""):
        return None
    try:
        state, plan = pickle.loads((directory / f"{token}.plan").read_bytes())  # noqa: S301
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError):
        return None
    return plan if state == register_state else None


def discard_upload(directory: Path, token: str) -> None:
    if UPLOAD_TOKEN.fullmatch(token or ""):
        for suffix in (".upload", ".json", ".plan"):
            (directory / f"{token}{suffix}").unlink(missing_ok=True)


def _remove_expired(directory: Path) -> None:
    cutoff = time.time() - UPLOAD_MAX_AGE
    for path in directory.glob("*.json"):
        try:
            expired = path.stat().st_mtime < cutoff
        except OSError:
            continue
        if expired:
            discard_upload(directory, path.stem)
