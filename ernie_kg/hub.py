"""Backbones by name: a local directory or the Hugging Face cache needs no network; a hub
name is tried only when the hub answers within :data:`HUB_TIMEOUT` seconds.

Why a probe first: with no network the Hugging Face client retried for about 50 s (a
firewall that drops packets, or a proxy that accepts and never answers: minutes) and then
raised a bare ``OSError``. The probe asks for the model's ``config.json`` (HTTP HEAD) in a
daemon thread joined with a timeout, because a socket timeout does not bound the DNS
lookup before it.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ernie_kg.errors import ErnieKGError

__all__ = ["HUB_TIMEOUT", "check_backbone", "no_save_progress_bars"]

#: Seconds the hub has to accept a connection before a hub name is given up.
HUB_TIMEOUT = 5.0


def _cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except (ValueError, OSError):  # not a valid repo id
        return False


def _hub_name(name: str) -> bool:
    """Could ``name`` be a hub model id ("bert-base-uncased", "org/model")? A path such
    as "./models/bert" or "/data/bert" cannot, so no network is tried for it."""
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # pragma: no cover - transformers depends on it
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "~")) and not Path(name).exists()


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - transformers depends on it
        return bool(os.environ.get("HF_TOKEN"))
    return get_token() is not None


def _hub_problem(endpoint: str, name: str, timeout: float) -> str | None:
    """None when the hub serves ``name``'s config.json within ``timeout`` seconds, else
    what went wrong. An HTTP request, not only a connection: a proxy that accepts the
    connection and never answers would otherwise stall the Hugging Face client."""
    url = f"{endpoint.rstrip('/')}/{name}/resolve/main/config.json"
    found: list[str | None] = []

    def probe() -> None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                found.append(None)
        except urllib.error.HTTPError as error:
            if error.code < 400 or error.code in (401, 403) and _has_token():
                found.append(None)  # private or gated: the client sends the token
            else:
                found.append(f"the hub ({endpoint}) has no public model {name!r} (HTTP "
                             f"{error.code}): a typo, or a private or gated model (log in "
                             "or set HF_TOKEN)")
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):  # the socket's timer beat join()'s
                found.append(f"the hub ({endpoint}) did not answer within {timeout:g} s")
            else:
                found.append(f"the hub ({endpoint}) could not be reached ({reason})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else f"the hub ({endpoint}) did not answer within {timeout:g} s"


def check_backbone(name: str | os.PathLike, timeout: float = HUB_TIMEOUT) -> None:
    """Raise :class:`ErnieKGError` at once when ``name`` is no local directory, is not in
    the Hugging Face cache, and the hub does not answer (or ``HF_HUB_OFFLINE`` is set)."""
    if Path(name).is_dir() or _cached(str(name)):
        return
    if not _hub_name(str(name)):
        raise ErnieKGError(f"backbone {str(name)!r}: no such model directory (and not a "
                           "Hugging Face model name such as 'bert-base-uncased')")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else _hub_problem(endpoint, str(name), timeout)
    if why is None:
        return
    raise ErnieKGError(
        f"backbone {str(name)!r} is not a local directory nor in the Hugging Face cache, "
        f"and {why}. Pass a local model directory (or omit --backbone for the packaged "
        "MiniLM), or download it where there is a network; HF_HUB_OFFLINE=1 keeps every "
        "load local.")


@contextmanager
def no_save_progress_bars() -> Iterator[None]:
    """Hugging Face's "Writing model shards" bar off for a while: a checkpoint or a saved
    model is one file, and a bar per save breaks the one bar per stage of a run."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
