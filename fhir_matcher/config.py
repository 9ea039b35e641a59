"""Settings from a TOML file, overridden by command-line flags.

    [server]
    url = "https://fhir.hospital.example/r4"
    timeout = 60          # seconds per request
    retries = 4
    workers = 4
    ca_bundle = "/etc/fhir-matcher/hospital-ca.pem"
    tag = ""              # optional: only resources with this meta.tag (system|code)
    group = "registry"    # optional (nightly): screen only Group/registry's members (or patients = "list.txt", bulk_group = "id")

    [auth]                # see the README's security section; secrets come from files or the environment
    method = "smart-backend"          # none | bearer | basic | client-secret | smart-backend
    client_id = "fhir-matcher"
    private_key_file = "/etc/fhir-matcher/key.pem"
    kid = "matcher-2026"
    alg = "RS384"                     # or ES384
    # token_url = "..."               # default: from .well-known/smart-configuration
    # scope = "..."                   # default: read what the criteria read, write ResearchStudy/Subject
    # client_cert = "/etc/fhir-matcher/client.pem"   # mutual TLS, with any method
    # client_key = "/etc/fhir-matcher/client.key"

    [trial]
    path = "/etc/fhir-matcher/trial.toml"   # default: the bundled CAR-T trial

    [windows]             # override a criterion's window: days ("14d" or 14) or months ("3m")
    inc-platelets = "14d"

    [output]
    dir = "/var/lib/fhir-matcher/out"
    state = "/var/lib/fhir-matcher/state.sqlite"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .trial import Trial, TrialError, read_toml

KNOWN = {
    "server": {"url", "timeout", "retries", "workers", "ca_bundle", "tag", "group", "patients", "bulk_group"},
    "auth": {"method", "client_id", "private_key_file", "kid", "alg", "token_url", "scope", "client_cert", "client_key",
             "username", "token_env", "token_file", "password_env", "password_file", "client_secret_env", "client_secret_file",
             "token", "password", "client_secret"},  # the last three are refused with a clear message
    "trial": {"path"},
    "windows": None,
    "output": {"dir", "state"},
    "terminology": {"url", "auth"},  # a terminology server; [terminology.auth] takes the [auth] settings
    "web": {"host", "port", "insecure_cookies", "session_idle_minutes", "session_max_hours", "secret_file", "secret_env", "public_url"},  # serve
    "smart": {"client_id", "client_secret_file", "client_secret_env", "client_secret", "redirect_uri", "scope", "role"},  # serve: web/smart.py
    "oidc": {"issuer", "client_id", "client_secret_file", "client_secret_env", "client_secret", "redirect_uri", "scope",
             "role_claim", "coordinator_values", "name_claim", "role", "name"},  # serve: web/oidc.py (client_secret is refused there)
}


class ConfigError(Exception):
    pass


def load_config(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    data = read_toml(path, "config", ConfigError)
    for section, value in data.items():
        if section not in KNOWN:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(KNOWN)})")
        allowed = KNOWN[section]
        if allowed is not None and isinstance(value, dict):
            extra = set(value) - allowed
            if extra:
                raise ConfigError(f"{path}: [{section}] has unknown setting(s): {', '.join(sorted(extra))}")
    data["_path"] = str(path)
    return data


def setting(args: Any, config: dict[str, Any], flag: str, section: str, key: str, default: Any = None) -> Any:
    """The flag if given, else the config file's value, else the default."""
    value = getattr(args, flag, None)
    if value is not None:
        return value
    return config.get(section, {}).get(key, default)


_WINDOW = re.compile(r"^\s*(\d+)\s*([dm]?)\s*$")


def apply_windows_all(trials: list[Trial], windows: dict[str, Any]) -> None:
    """[windows] for a portfolio: each override goes to every trial that has that criterion."""
    if len(trials) == 1:
        apply_windows(trials[0], windows)
        return
    for cid in windows:
        if not any(c.id == cid for t in trials for c in t.criteria):
            raise TrialError(f"[windows] names a criterion no trial has: {cid}")
    for t in trials:
        ids = {c.id for c in t.criteria}
        apply_windows(t, {k: v for k, v in windows.items() if k in ids})


def apply_windows(trial: Trial, windows: dict[str, Any]) -> None:
    """Override criteria windows: ``{"inc-platelets": "14d", "exc-prior-cell-therapy": "6m"}``."""
    by_id = {c.id: c for c in trial.criteria}
    for cid, spec in windows.items():
        criterion = by_id.get(cid)
        if criterion is None:
            raise TrialError(f"[windows] names an unknown criterion: {cid}")
        targets = [c for c in criterion.walk() if "window_days" in c.params or "window_months" in c.params]
        if not targets:
            raise TrialError(f"[windows] {cid}: that criterion has no window")
        m = _WINDOW.match(str(spec))
        if not m:
            raise TrialError(f"[windows] {cid}: {spec!r} is not a number of days (14d) or months (3m)")
        n, unit = int(m.group(1)), m.group(2) or "d"
        for c in targets:
            c.params.pop("window_days", None)
            c.params.pop("window_months", None)
            c.params["window_days" if unit == "d" else "window_months"] = n
