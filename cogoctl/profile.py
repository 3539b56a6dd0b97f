"""Profiles: YAML -> frozen dataclasses, with `${VAR:-default}` substitution and file:line errors.

Pure apart from reading the file: ``load_profile(path)`` reads it, ``parse_profile(text, ...)``
does the rest and is what the unit tests drive. Every error is a ProfileError naming the file,
the line, the key path and what was expected.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cogoctl.errors import ProfileError, UsageError
from cogoctl.units import parse_duration, parse_percent, parse_size

PACKAGED_DIR = Path(__file__).resolve().parent / "profiles"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_RE = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)

RESTART_POLICIES = ("always", "on-failure", "never")
STRATEGIES = ("least-outstanding", "round-robin", "power-of-two")

Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class RestartConfig:
    policy: str = "always"
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    start_limit: int = 5
    start_window: float = 60.0
    stable_after: float = 10.0


@dataclass(frozen=True)
class HealthCheckConfig:
    path: str = "/health"
    interval: float = 30.0
    timeout: float = 2.0
    failures: int = 3


@dataclass(frozen=True)
class LimitsConfig:
    memory: int | None = None  # bytes, rss of the instance and its descendants
    cpu: float | None = None  # percent of one core
    window: float = 10.0  # how long a limit must be exceeded before acting


@dataclass(frozen=True)
class LogsConfig:
    max_size: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    command: tuple[str, ...]
    enabled: bool = True
    runtime: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    port: int | None = None
    public: str = "token"
    instances: int = 1
    min_instances: int | None = None  # autoscaling bounds (both set: autoscaling on)
    max_instances: int | None = None
    scale_up_queue: float = 2.0  # queued tasks per RUNNING instance that trigger a scale-up
    scale_cooldown: float = 30.0  # between two scaling steps, and idle time before scaling down
    capabilities: tuple[str, ...] = ()
    max_concurrency: int = 4
    queue_limit: int = 100
    strategy: str = "least-outstanding"
    depends_on: tuple[str, ...] = ()
    restart: RestartConfig = RestartConfig()
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    start_timeout: float = 20.0
    min_uptime: float = 1.0
    hang_kill_timeout: float = 1.0
    heartbeat_interval: float = 30.0
    heartbeat_misses: int = 3
    health_check: HealthCheckConfig | None = HealthCheckConfig()
    limits: LimitsConfig = LimitsConfig()
    logs: LogsConfig = LogsConfig()
    options: dict[str, Any] = field(default_factory=dict)
    watch: tuple[str, ...] = ()  # absolute paths or globs; a change restarts this worker (manager.watch)
    watch_ignore: tuple[str, ...] = ()  # globs matched against the changed path and its file name

    @property
    def signum(self) -> int:
        return int(getattr(signal, self.stop_signal))

    @property
    def probes(self) -> bool:
        """Whether the supervisor probes GET health_check.path on this worker's port."""
        return self.health_check is not None and self.port is not None


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 3010


@dataclass(frozen=True)
class HooksConfig:
    command: tuple[str, ...] | None = None
    webhook: str | None = None
    on: tuple[str, ...] = ("UNHEALTHY", "FATAL")


@dataclass(frozen=True)
class ManagerConfig:
    socket: str | None = None  # None: <state dir>/cogoctl.sock
    api: ApiConfig = ApiConfig()
    metrics_interval: float = 2.0
    hooks: HooksConfig = HooksConfig()
    logs: LogsConfig = LogsConfig()
    watch: bool = False  # restart workers whose `watch` paths change (dev); `up --watch/--no-watch`
    watch_debounce: float = 0.3  # a burst of changes within this window is one restart


@dataclass(frozen=True)
class LegacyConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port_redirection: dict[int, int] = field(default_factory=dict)
    message_translation: bool = False
    max_connections: int = 1024  # per listener; more are refused at once
    idle_timeout: float = 300.0  # a relayed connection with no bytes either way for this long is closed


BRIDGE_WORKER = "legacy-bridge"


@dataclass(frozen=True)
class Profile:
    path: str
    name: str
    manager: ManagerConfig
    workers: dict[str, WorkerConfig]  # in start order (dependencies first), enabled and disabled
    legacy_support: LegacyConfig

    @property
    def enabled_workers(self) -> list[WorkerConfig]:
        return [w for w in self.workers.values() if w.enabled]

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if mask_secrets:
            for worker in data["workers"].values():
                worker["env"] = mask_env(worker["env"])
        return data


def mask_env(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if SECRET_RE.search(k) else v) for k, v in env.items()}


# --------------------------------------------------------------------------- locating


def resolve_profile_path(name_or_path: str) -> Path:
    """`dev`/`prod` (any name without a slash or .yaml) -> the packaged profile; else a path."""
    candidate = Path(name_or_path)
    looks_like_path = "/" in name_or_path or candidate.suffix in (".yaml", ".yml")
    if not looks_like_path:
        packaged = PACKAGED_DIR / f"{name_or_path}.yaml"
        if packaged.is_file():
            return packaged
        known = ", ".join(sorted(p.stem for p in PACKAGED_DIR.glob("*.yaml")))
        if not candidate.exists():
            raise UsageError(
                f"profile {name_or_path!r}: no packaged profile of that name (packaged: {known}); "
                "give a path to a YAML file instead"
            )
    return candidate.resolve()


def load_profile(name_or_path: str, environ: dict[str, str] | None = None) -> Profile:
    path = resolve_profile_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(
            str(path), None, "", "file not found; pass dev, prod or the path of a YAML profile"
        ) from None
    except OSError as exc:
        raise ProfileError(str(path), None, "", f"cannot read: {exc.strerror}") from exc
    return parse_profile(text, str(path), environ if environ is not None else dict(os.environ))


# --------------------------------------------------------------------------- YAML with lines


class _Doc:
    """A YAML document converted to Python values, remembering the line of every key path."""

    def __init__(self, text: str, file: str, environ: dict[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.lines: dict[Path_, int] = {}
        self.from_env: dict[Path_, str] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise ProfileError(file, line, "", f"YAML syntax error: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise ProfileError(file, None, "", f"YAML error: {exc}") from None
        self._constructor = yaml.SafeLoader("")
        self.data = {} if node is None else self._convert(node, ())

    def _convert(self, node: yaml.Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node, path)
                if isinstance(key, list | dict) or key is None:
                    raise ProfileError(self.file, key_node.start_mark.line + 1, _fmt(path), "keys must be scalars")
                key_path = (*path, str(key))  # str: an int key is a mapping key, not a list index
                if key in out:
                    raise ProfileError(self.file, key_node.start_mark.line + 1, _fmt(key_path), "duplicate key")
                self.lines[key_path] = key_node.start_mark.line + 1
                out[key] = self._convert(value_node, key_path)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path_) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return self._convert(node, path)
        value = self._constructor.construct_object(node, deep=True)
        if isinstance(value, str) and "${" in value:
            names: list[str] = []

            def sub(m: re.Match[str]) -> str:
                names.append(m.group(1))
                var, default = m.group(1), m.group(2)
                got = self.environ.get(var)
                if got is None or (got == "" and default is not None):
                    if default is None:
                        raise ProfileError(
                            self.file,
                            node.start_mark.line + 1,
                            _fmt(path),
                            f"environment variable {var} is not set (write ${{{var}:-default}} to give a default)",
                        )
                    return default
                return got

            substituted = _VAR_RE.sub(sub, value)
            self.from_env[path] = ", ".join(f"${{{n}}}" for n in names)
            if node.style is None:  # plain scalar: let YAML type the substituted text (ports are ints)
                try:
                    value = yaml.safe_load(substituted) if substituted.strip() else ""
                except yaml.YAMLError:
                    value = substituted
                if isinstance(value, list | dict):
                    value = substituted
            else:
                value = substituted
        return value

    def line(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def fail(self, path: Path_, problem: str) -> ProfileError:
        env = self.from_env.get(path)
        if env:
            problem = f"{problem} (value came from {env})"
        return ProfileError(self.file, self.line(path), _fmt(path), problem)


def _fmt(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- validation

_Parser = Callable[[Any], Any]


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _int_range(lo: int, hi: int | None = None) -> _Parser:
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}")
        return v

    return parse


_port = _int_range(1, 65535)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def _choice(*choices: str) -> _Parser:
    def parse(v: Any) -> str:
        if v not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return v

    return parse


def _signal_name(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("a signal name such as SIGTERM")
    name = v.upper() if v.upper().startswith("SIG") else "SIG" + v.upper()
    if not isinstance(getattr(signal, name, None), signal.Signals):
        raise ValueError("a signal name such as SIGTERM, SIGINT or SIGQUIT")
    return name


def _pos_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise ValueError("a number > 0")
    return float(v)


def _positive_duration(v: Any) -> float:
    seconds = parse_duration(v)
    if seconds <= 0:
        raise ValueError("a duration > 0 such as 500ms, 30s or 2m")
    return seconds


class _Validator:
    def __init__(self, doc: _Doc, profile_dir: Path) -> None:
        self.doc = doc
        self.dir = profile_dir

    def mapping(self, value: Any, path: Path_, allowed: dict[str, Any]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.doc.fail(path, "expected a mapping")
        for key in value:
            if key not in allowed:
                raise self.doc.fail((*path, key), f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def field(self, data: dict[str, Any], path: Path_, key: str, parser: _Parser, default: Any) -> Any:
        if key not in data:
            return default
        try:
            return parser(data[key])
        except ValueError as exc:
            raise self.doc.fail((*path, key), f"expected {exc}, got {data[key]!r}") from None

    def str_list(self, data: dict[str, Any], path: Path_, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if key not in data:
            return default
        value = data[key]
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.doc.fail((*path, key), f"expected a list of strings, got {value!r}")
        for i, item in enumerate(value):
            if not isinstance(item, str | int | float) or isinstance(item, bool) or item == "":
                raise self.doc.fail((*path, key, i), f"expected a non-empty string, got {item!r}")
        return tuple(str(item) for item in value)


_WORKER_KEYS = {
    "enabled", "command", "runtime", "env", "cwd", "port", "public", "instances", "capabilities",
    "min_instances", "max_instances", "scale_up_queue", "scale_cooldown",
    "max_concurrency", "queue_limit", "strategy", "depends_on", "restart", "stop_signal",
    "stop_timeout", "start_timeout", "min_uptime", "hang_kill_timeout", "heartbeat_interval", "heartbeat_misses",
    "health_check", "limits", "logs", "options", "watch", "watch_ignore",
}  # fmt: skip
_DEFAULTABLE = _WORKER_KEYS - {"command", "port", "depends_on", "capabilities"}
_RESTART_KEYS = {"policy", "backoff_initial", "backoff_max", "start_limit", "start_window", "stable_after"}
_HEALTH_KEYS = {"path", "interval", "timeout", "failures"}
_LIMIT_KEYS = {"memory", "cpu", "window"}
_LOG_KEYS = {"max_size", "backups"}


def parse_profile(text: str, file: str, environ: dict[str, str]) -> Profile:
    doc = _Doc(text, file, environ)
    v = _Validator(doc, Path(file).resolve().parent)
    top = v.mapping(doc.data, (), {"version": 1, "manager": 1, "defaults": 1, "workers": 1, "legacy_support": 1})
    if "version" in top and top["version"] != 1:
        raise doc.fail(("version",), f"expected 1 (the only profile version), got {top['version']!r}")
    manager = _parse_manager(v, top.get("manager"))
    defaults = v.mapping(top.get("defaults"), ("defaults",), dict.fromkeys(_DEFAULTABLE, 1))
    workers_raw = v.mapping(top.get("workers"), ("workers",), _AnyKey())
    workers: dict[str, WorkerConfig] = {}
    for name, raw in workers_raw.items():
        path: Path_ = ("workers", name)
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise doc.fail(path, "worker names are lower-case letters, digits, - and _ (at most 63)")
        workers[name] = _parse_worker(v, name, raw, defaults, path)
    legacy = _parse_legacy(v, top.get("legacy_support"))
    if legacy.enabled and legacy.port_redirection and BRIDGE_WORKER not in workers:
        # the bridge runs as a supervised worker of its own (python -m cogoctl.bridge)
        bridge = {"command": ["python", "-m", "cogoctl.bridge", "--profile", str(Path(file).resolve())],
                  "runtime": True, "health_check": None}  # fmt: skip
        workers[BRIDGE_WORKER] = _parse_worker(v, BRIDGE_WORKER, bridge, defaults, ("legacy_support",))
    _check_dependencies(doc, workers)
    _check_ports(doc, manager, workers, legacy)
    ordered = {name: workers[name] for name in start_order(workers)}
    return Profile(path=file, name=Path(file).stem, manager=manager, workers=ordered, legacy_support=legacy)


class _AnyKey(dict):  # type: ignore[type-arg]
    def __contains__(self, key: object) -> bool:
        return True


def _parse_logs(v: _Validator, raw: Any, path: Path_, base: LogsConfig) -> LogsConfig:
    data = v.mapping(raw, path, dict.fromkeys(_LOG_KEYS, 1))
    return LogsConfig(
        max_size=v.field(data, path, "max_size", parse_size, base.max_size),
        backups=v.field(data, path, "backups", _int_range(0, 100), base.backups),
    )


def _parse_manager(v: _Validator, raw: Any) -> ManagerConfig:
    path: Path_ = ("manager",)
    data = v.mapping(
        raw,
        path,
        {"socket": 1, "api": 1, "metrics_interval": 1, "hooks": 1, "logs": 1, "watch": 1, "watch_debounce": 1},
    )
    api_path = (*path, "api")
    api = v.mapping(data.get("api"), api_path, {"enabled": 1, "host": 1, "port": 1})
    hooks_path = (*path, "hooks")
    hooks = v.mapping(data.get("hooks"), hooks_path, {"command": 1, "webhook": 1, "on": 1})
    webhook = v.field(hooks, hooks_path, "webhook", _loopback_url, None)
    on = v.str_list(hooks, hooks_path, "on", HooksConfig.on)
    for i, state in enumerate(on):
        if state not in ("UNHEALTHY", "FATAL", "BACKOFF", "EXITED"):
            raise v.doc.fail((*hooks_path, "on", i), "expected UNHEALTHY, FATAL, BACKOFF or EXITED")
    socket = data.get("socket")
    if socket is not None:
        socket = v.field(data, path, "socket", _str, None)
        socket = str((v.dir / os.path.expanduser(socket)).resolve())
    return ManagerConfig(
        socket=socket,
        api=ApiConfig(
            enabled=v.field(api, api_path, "enabled", _bool, False),
            host=v.field(api, api_path, "host", _str, "127.0.0.1"),
            port=v.field(api, api_path, "port", _port, 3010),
        ),
        metrics_interval=v.field(data, path, "metrics_interval", _positive_duration, 2.0),
        hooks=HooksConfig(
            command=_command(v, hooks, hooks_path, "command", required=False),
            webhook=webhook,
            on=on,
        ),
        logs=_parse_logs(v, data.get("logs"), (*path, "logs"), LogsConfig()),
        watch=v.field(data, path, "watch", _bool, False),
        watch_debounce=v.field(data, path, "watch_debounce", parse_duration, 0.3),
    )


def _loopback_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)", value):
        raise ValueError("an http:// URL on loopback (127.0.0.1, localhost or [::1])")
    return value


def _command(v: _Validator, data: dict[str, Any], path: Path_, key: str, required: bool) -> tuple[str, ...] | None:
    if key not in data or data[key] is None:
        if required:
            raise v.doc.fail(path, f"missing required key {key!r} (the command to run, as a list)")
        return None
    raw = data[key]
    if isinstance(raw, str):
        import shlex

        raw = shlex.split(raw)
    if not isinstance(raw, list) or not raw:
        raise v.doc.fail((*path, key), "expected a non-empty list such as [python, -m, myworker]")
    cmd = v.str_list({key: raw}, path, key, ())
    # `python` means the interpreter cogoctl runs under (the pyenv shim is slow and lacks our packages)
    if cmd[0] in ("python", "python3"):
        cmd = (sys.executable, *cmd[1:])
    return cmd


def _merge(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _parse_worker(v: _Validator, name: str, raw: Any, defaults: dict[str, Any], path: Path_) -> WorkerConfig:
    own = v.mapping(raw, path, dict.fromkeys(_WORKER_KEYS, 1))
    # keys inherited from `defaults` report errors at their line there
    data = _merge(defaults, own)

    def at(key: str) -> Path_:
        return path if key in own else ("defaults",)

    def fld(key: str, parser: _Parser, default: Any) -> Any:
        return v.field(data, at(key), key, parser, default)

    command = _command(v, own, path, "command", required=True)
    assert command is not None
    env_raw = v.mapping(data.get("env"), (*at("env"), "env"), _AnyKey())
    env: dict[str, str] = {}
    for key, value in env_raw.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise v.doc.fail((*at("env"), "env", key), "environment variable names are letters, digits and _")
        if isinstance(value, list | dict) or value is None:
            raise v.doc.fail((*at("env"), "env", key), f"expected a string, got {value!r}")
        env[key] = str(value).lower() if isinstance(value, bool) else str(value)

    cwd = fld("cwd", _str, None)
    cwd = str((v.dir / os.path.expanduser(cwd)).resolve()) if cwd else str(v.dir)

    restart_path = (*at("restart"), "restart")
    restart = v.mapping(data.get("restart"), restart_path, dict.fromkeys(_RESTART_KEYS, 1))
    rc = RestartConfig(
        policy=v.field(restart, restart_path, "policy", _choice(*RESTART_POLICIES), "always"),
        backoff_initial=v.field(restart, restart_path, "backoff_initial", parse_duration, 0.5),
        backoff_max=v.field(restart, restart_path, "backoff_max", parse_duration, 30.0),
        start_limit=v.field(restart, restart_path, "start_limit", _int_range(1), 5),
        start_window=v.field(restart, restart_path, "start_window", _positive_duration, 60.0),
        stable_after=v.field(restart, restart_path, "stable_after", parse_duration, 10.0),
    )
    if rc.backoff_max < rc.backoff_initial:
        raise v.doc.fail((*restart_path, "backoff_max"), "expected backoff_max >= backoff_initial")

    health: HealthCheckConfig | None
    hc_raw = data.get("health_check", {})
    if hc_raw is None or hc_raw is False:
        health = None
    else:
        hc_path = (*at("health_check"), "health_check")
        hc = v.mapping(hc_raw, hc_path, dict.fromkeys(_HEALTH_KEYS, 1))
        hpath = v.field(hc, hc_path, "path", _str, "/health")
        if not hpath.startswith("/"):
            raise v.doc.fail((*hc_path, "path"), f"expected a path starting with /, got {hpath!r}")
        health = HealthCheckConfig(
            path=hpath,
            interval=v.field(hc, hc_path, "interval", _positive_duration, 30.0),
            timeout=v.field(hc, hc_path, "timeout", _positive_duration, 2.0),
            failures=v.field(hc, hc_path, "failures", _int_range(1), 3),
        )

    lim_path = (*at("limits"), "limits")
    lim = v.mapping(data.get("limits"), lim_path, dict.fromkeys(_LIMIT_KEYS, 1))
    limits = LimitsConfig(
        memory=v.field(lim, lim_path, "memory", lambda x: None if x is None else parse_size(x), None),
        cpu=v.field(lim, lim_path, "cpu", lambda x: None if x is None else parse_percent(x), None),
        window=v.field(lim, lim_path, "window", parse_duration, 10.0),
    )

    options = data.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise v.doc.fail((*at("options"), "options"), "expected a mapping of the worker's own settings")

    # 0: an ephemeral port (runtime workers report it in hello; plain commands get one in $PORT)
    watch = tuple(str((v.dir / os.path.expanduser(w)).resolve()) if not os.path.isabs(w) else w
                  for w in v.str_list(data, at("watch"), "watch", ()))  # fmt: skip
    port = v.field(own, path, "port", lambda x: None if x is None else _int_range(0, 65535)(x), None)
    instances = fld("instances", _int_range(0, 256), 1)
    min_i = v.field(own, path, "min_instances", _int_range(0, 256), None)
    max_i = v.field(own, path, "max_instances", _int_range(1, 256), None)
    if (min_i is None) != (max_i is None):
        raise v.doc.fail((*path, "min_instances" if min_i is None else "max_instances"),
                         "autoscaling needs both min_instances and max_instances")  # fmt: skip
    if min_i is not None and max_i is not None:
        if min_i > max_i:
            raise v.doc.fail((*path, "max_instances"), f"expected max_instances >= min_instances ({min_i})")
        if not min_i <= instances <= max_i:
            if "instances" in own:
                raise v.doc.fail(
                    (*path, "instances"), f"expected instances within min_instances..max_instances ({min_i}..{max_i})"
                )
            instances = max(min_i, 1) if min_i <= 1 <= max_i else min_i
    return WorkerConfig(
        name=name,
        command=command,
        enabled=fld("enabled", _bool, True),
        runtime=fld("runtime", _bool, False),
        env=env,
        cwd=cwd,
        port=port,
        public=fld("public", _choice("token", "open"), "token"),
        instances=instances,
        min_instances=min_i,
        max_instances=max_i,
        scale_up_queue=fld("scale_up_queue", _pos_float, 2.0),
        scale_cooldown=fld("scale_cooldown", parse_duration, 30.0),
        capabilities=v.str_list(own, path, "capabilities", ()),
        max_concurrency=fld("max_concurrency", _int_range(1, 10000), 4),
        queue_limit=fld("queue_limit", _int_range(0, 1_000_000), 100),
        strategy=fld("strategy", _choice(*STRATEGIES), "least-outstanding"),
        depends_on=v.str_list(own, path, "depends_on", ()),
        restart=rc,
        stop_signal=fld("stop_signal", _signal_name, "SIGTERM"),
        stop_timeout=fld("stop_timeout", parse_duration, 10.0),
        start_timeout=fld("start_timeout", _positive_duration, 20.0),
        min_uptime=fld("min_uptime", parse_duration, 1.0),
        hang_kill_timeout=fld("hang_kill_timeout", _positive_duration, 1.0),
        heartbeat_interval=fld("heartbeat_interval", _positive_duration, 30.0),
        heartbeat_misses=fld("heartbeat_misses", _int_range(1, 1000), 3),
        health_check=health,
        limits=limits,
        logs=_parse_logs(v, data.get("logs"), (*at("logs"), "logs"), LogsConfig()),
        options=options,
        watch=watch,
        watch_ignore=v.str_list(data, at("watch_ignore"), "watch_ignore", ()),
    )


def _check_dependencies(doc: _Doc, workers: dict[str, WorkerConfig]) -> None:
    for w in workers.values():
        for i, dep in enumerate(w.depends_on):
            if dep not in workers:
                raise doc.fail(("workers", w.name, "depends_on", i), f"unknown worker {dep!r}")
            if dep == w.name:
                raise doc.fail(("workers", w.name, "depends_on", i), "a worker cannot depend on itself")
            if w.enabled and not workers[dep].enabled:
                raise doc.fail(("workers", w.name, "depends_on", i), f"worker {dep!r} is disabled")
    # cycle detection (DFS, colours)
    colour: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        colour[name] = 1
        for dep in workers[name].depends_on:
            if colour.get(dep) == 1:
                cycle = " -> ".join([*trail[trail.index(dep) :], dep]) if dep in trail else f"{name} -> {dep}"
                raise doc.fail(("workers", name, "depends_on"), f"dependency cycle: {cycle}")
            if dep not in colour:
                visit(dep, [*trail, dep])
        colour[name] = 2

    for name in workers:
        if name not in colour:
            visit(name, [name])


def start_order(workers: dict[str, WorkerConfig]) -> list[str]:
    """Dependencies first; otherwise the order of the file (stable topological sort)."""
    done: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in workers[name].depends_on:
            add(dep)
        done.append(name)

    for name in workers:
        add(name)
    return done


def _parse_legacy(v: _Validator, raw: Any) -> LegacyConfig:
    path: Path_ = ("legacy_support",)
    allowed = {"enabled": 1, "host": 1, "port_redirection": 1, "message_translation": 1, "max_connections": 1,
               "idle_timeout": 1}  # fmt: skip
    data = v.mapping(raw, path, allowed)
    redirect_path = (*path, "port_redirection")
    redirect_raw = v.mapping(data.get("port_redirection"), redirect_path, _AnyKey())
    redirection: dict[int, int] = {}
    for src, dst in redirect_raw.items():
        try:
            redirection[_port(int(src) if isinstance(src, str) and src.isdigit() else src)] = _port(dst)
        except (ValueError, TypeError):
            raise v.doc.fail(
                (*redirect_path, str(src)), f"expected legacy_port: worker_port (1-65535), got {src!r}: {dst!r}"
            ) from None
    return LegacyConfig(
        enabled=v.field(data, path, "enabled", _bool, False),
        host=v.field(data, path, "host", _str, "127.0.0.1"),
        port_redirection=redirection,
        message_translation=v.field(data, path, "message_translation", _bool, False),
        max_connections=v.field(data, path, "max_connections", _int_range(1, 100_000), 1024),
        idle_timeout=v.field(data, path, "idle_timeout", _positive_duration, 300.0),
    )


def _check_ports(doc: _Doc, manager: ManagerConfig, workers: dict[str, WorkerConfig], legacy: LegacyConfig) -> None:
    taken: dict[int, str] = {}
    if manager.api.enabled:
        taken[manager.api.port] = "manager.api.port"
    for w in workers.values():
        if not w.enabled or not w.port:
            continue
        key = f"workers.{w.name}.port"
        if w.port in taken:
            raise doc.fail(("workers", w.name, "port"), f"port {w.port} is already used by {taken[w.port]}")
        taken[w.port] = key
    if legacy.enabled:
        for src in legacy.port_redirection:
            if src in taken:
                raise doc.fail(
                    ("legacy_support", "port_redirection", str(src)),
                    f"legacy port {src} is already used by {taken[src]}",
                )
            taken[src] = f"legacy_support.port_redirection.{src}"
