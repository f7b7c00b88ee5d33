"""Run directories for the command line: config resolution, overrides, metrics, training, eval.

This module sits *outside* the core layers (like the CLI, benchmarks and notebooks): it turns
names and ``key=value`` strings into a :class:`RunSpec` (algorithm, environment, static config,
traced hyperparameters, seeds), trains it through the chunked driver
:func:`jaxstab.training.loop.run` and writes a run directory:

.. code-block:: text

    RUN_DIR/
      config.json      resolved config + hparams + env kwargs + versions + command line
      metrics.jsonl    one JSON object per chunk: {"chunk", "step", "time_s", <metric>: [per seed]}
      checkpoints/     orbax checkpoints of the vmapped carry (jaxstab.checkpoint.Checkpointer)
      policy/          the trained policy parameters of every seed (jaxstab.checkpoint.save_pytree)
      plots/*.png      learning curves with a seed band (mean line, min-max and +-std bands)
      summary.json     final per-seed metrics, their mean and std, wall time, throughput
      eval_<split>.json, plots/eval_*.png   written by ``jaxstab eval``

``metrics.jsonl`` holds one line per chunk (a chunk is what the driver runs between two
progress updates: for SAC one evaluation interval, for PPO a block of updates), with every
metric reduced to one number per seed (the mean over the chunk; SAC update metrics only over
steps where learning had started) and stored as a list of length ``seeds``. A resumed run
rewrites the file up to the chunk it resumes from, so the file always matches the checkpoint.

Overrides (``--set key=value``): ``key`` is a field of the algorithm's Config (static: sizes,
switches), of its HParams (traced scalars), or ``env.<name>`` for an environment argument.
A name present in both Config and HParams must be qualified as ``cfg.<name>`` or ``hp.<name>``.
Values are parsed to the field's type (``int``, ``float``, ``bool`` as true/false/1/0/yes/no,
tuples as comma-separated lists, ``none`` for optional fields); the Config's own checks then
validate them. Every error is a :class:`UsageError` (a ``ValueError``) whose message lists the
valid names or choices; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as _dt
import inspect
import json
import math
import os
import platform
import sys
import time
import types
import typing
from typing import Any, Callable, Mapping, Sequence

import numpy as np

ALGORITHMS = ("sac", "ppo")
DEFAULT_ENV = "portfolio"
_PREFIXES = ("cfg.", "hp.", "env.")


class UsageError(ValueError):
    """A bad name or value given by the user (the CLI prints it and exits with code 2)."""


@dataclasses.dataclass
class RunSpec:
    """Everything needed to rebuild a run (stored as ``config.json``).

    Attributes:
      algo: ``"sac"`` or ``"ppo"``.
      env: environment name (``"portfolio"`` or a gymnax name).
      env_kwargs: keyword arguments of the environment factory (``env.<name>`` overrides).
      seeds: number of seeds trained at once (``vmap``).
      seed: base seed; seed ``i`` uses ``jax.random.split(jax.random.key(seed), seeds)[i]``.
      config: the algorithm's static Config (``SACConfig`` / ``PPOConfig``).
      hparams: the traced hyperparameters as Python floats (every field).
      overrides: the ``key=value`` strings as given.
    """

    algo: str
    env: str
    env_kwargs: dict
    seeds: int
    seed: int
    config: Any
    hparams: dict
    overrides: list

    def to_json(self) -> dict:
        cfg = dataclasses.asdict(self.config)
        return {"algo": self.algo, "env": self.env, "env_kwargs": self.env_kwargs,
                "seeds": self.seeds, "seed": self.seed,
                "config_class": type(self.config).__name__, "config": cfg,
                "hparams": self.hparams, "overrides": list(self.overrides)}


# --------------------------------------------------------------------------- environments
def env_names() -> list[str]:
    """Valid environment names: ``portfolio`` (if installed) and gymnax's registered ones."""
    import gymnax

    names = list(gymnax.registered_envs)
    try:
        import jaxstab.envs as E

        extra = getattr(E, "ENV_NAMES", None) or getattr(E, "registered_envs", None)
        if extra:
            names = [n for n in extra if n not in names] + names
        elif hasattr(E, "make_portfolio"):
            names = ["portfolio"] + names
    except ImportError:
        pass
    return names


def make_env(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """``(env, env_params)`` for ``"portfolio"`` or a gymnax name.

    Uses :func:`jaxstab.envs.make` when available; gymnax names fall back to ``gymnax.make``.
    For gymnax environments ``kwargs`` replace fields of ``env_params``.

    Raises:
      UsageError: for an unknown name (listing the valid ones) or bad keyword arguments.
    """
    valid = env_names()
    if name not in valid:
        raise UsageError(f"unknown environment {name!r}; valid: {', '.join(valid)}")
    try:
        import jaxstab.envs as E
        factory = getattr(E, "make", None)
    except ImportError:
        factory = None
    try:
        if name == "portfolio" or factory is not None and name not in _gymnax_names():
            if factory is None:
                raise UsageError("the portfolio environment is not installed (jaxstab.envs.make)")
            return factory(name, **kwargs)
        import gymnax

        env, params = gymnax.make(name)
        if kwargs:
            fields = _struct_fields(params)
            bad = sorted(set(kwargs) - set(fields))
            if bad:
                raise UsageError(f"unknown env.{bad[0]} for {name}; valid env keys: "
                                 f"{', '.join('env.' + f for f in fields)}")
            params = params.replace(**kwargs)
        return env, params
    except UsageError:
        raise
    except (TypeError, ValueError) as e:
        raise UsageError(f"environment {name!r}: {e}") from e


def _gymnax_names() -> list[str]:
    import gymnax

    return list(gymnax.registered_envs)


def _struct_fields(obj: Any) -> list[str]:
    if dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj)]
    return list(getattr(obj, "_fields", ()))


def _env_kwarg_types(name: str) -> dict[str, tuple[Any, Any]] | None:
    """``{kwarg: (annotation, default)}`` of an environment's factory (None: accept anything)."""
    if name == "portfolio":
        try:
            import jaxstab.envs as E
        except ImportError:
            return None
        fn = getattr(E, "make_portfolio", None)
        if fn is None:
            return None
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to defaults
            hints = {}
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return {k: (hints.get(k, type(p.default) if p.default is not p.empty else str),
                    p.default) for k, p in sig.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    import gymnax

    _, params = gymnax.make(name)
    out = {}
    for f in _struct_fields(params):
        v = getattr(params, f)
        out[f] = (bool if isinstance(v, bool) else int if isinstance(v, int)
                  else float if isinstance(v, float) else type(v), v)
    return out


def space_info(env: Any, env_params: Any) -> dict:
    """Observation/action dimensions and kind of a gymnax-style environment."""
    obs_shape = tuple(env.observation_space(env_params).shape)
    space = env.action_space(env_params)
    if hasattr(space, "n") and not hasattr(space, "low"):
        return {"obs_dim": int(np.prod(obs_shape)), "discrete": True, "action_dim": int(space.n)}
    shape = tuple(space.shape)
    return {"obs_dim": int(np.prod(obs_shape)), "discrete": False,
            "action_dim": int(np.prod(shape)) if shape else 1}


# --------------------------------------------------------------------------- values
_TRUE = ("1", "true", "yes", "on", "t", "y")
_FALSE = ("0", "false", "no", "off", "f", "n")


def parse_value(name: str, text: str, annotation: Any) -> Any:
    """Parse ``text`` to ``annotation`` (bool, int, float, str, tuples, optionals).

    Raises:
      UsageError: naming ``name`` when the text does not parse.
    """
    t = text.strip()
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    try:
        if origin in (typing.Union, types.UnionType):
            if type(None) in args and t.lower() in ("none", "null"):
                return None
            others = [a for a in args if a is not type(None)]
            errors = []
            for a in others:
                try:
                    return parse_value(name, t, a)
                except UsageError as e:
                    errors.append(str(e))
            raise UsageError("; ".join(errors))
        if origin in (tuple, list, collections.abc.Sequence):
            inner = args[0] if args else str
            body = t.strip("()[] ")
            if not body:
                return ()
            return tuple(parse_value(name, p, inner) for p in body.split(",") if p.strip())
        if annotation is bool:
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError("expected true/false")
        if annotation is int:
            v = float(t.replace("_", ""))
            if not v.is_integer():
                raise ValueError("expected an integer")
            return int(v)
        if annotation is float or annotation is Any:
            v = float(t.replace("_", ""))
            return v
        if annotation is str:
            return t
    except (ValueError, OverflowError) as e:
        raise UsageError(f"{name}={text!r}: cannot parse as {_type_name(annotation)} ({e})") from e
    return t


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _dataclass_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def parse_overrides(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """Split ``key=value`` strings (raises :class:`UsageError` on a missing ``=``)."""
    out = []
    for item in items or ():
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise UsageError(f"--set expects key=value, got {item!r}")
        out.append((k, v))
    return out


# --------------------------------------------------------------------------- algorithms
def _sac_irt_available() -> bool:
    from jaxstab.agents.sac import SACConfig

    fields = {f.name for f in dataclasses.fields(SACConfig)}
    if "actor" in fields:
        try:
            SACConfig(actor="irt", policy="projected_gaussian")
            return True
        except (TypeError, ValueError):
            return False
    return False


def _algo_classes(algo: str) -> tuple[type, type]:
    if algo == "sac":
        from jaxstab.agents.sac import SACConfig, SACHParams

        return SACConfig, SACHParams
    from jaxstab.agents.ppo import PPOConfig, PPOHParams

    return PPOConfig, PPOHParams


def _hparam_types(cls: type) -> dict[str, Any]:
    return {f: float for f in cls._fields}


def default_steps(algo: str, env: str) -> int:
    """Default ``--steps`` (environment transitions per seed)."""
    if env == "portfolio":
        return 10_000 if algo == "sac" else 40_960
    return 20_000 if algo == "sac" else 100_000


def default_seeds(env: str) -> int:
    """Default ``--seeds``."""
    return 2 if env == "portfolio" else 4


def _base_config(algo: str, env: str, info: dict) -> dict:
    """Config fields chosen by the CLI for this algorithm and environment (before overrides)."""
    if algo == "sac":
        base: dict[str, Any] = {"hidden_sizes": (64, 64), "eval_episodes": 5}
        if env == "portfolio":
            if _sac_irt_available():
                base.update(actor="irt", policy="projected_gaussian")
            else:
                base.update(policy="logistic_normal")
            base.update(num_envs=4, eval_episodes=1)
        return base
    base = {"hidden_sizes": (64, 64)}
    if info["discrete"]:
        base["policy_kind"] = "discrete"
    else:
        base["policy_kind"] = "gaussian"
    if env == "portfolio":
        base.update(num_envs=8, num_steps=64)
    return base


def _base_hparams(algo: str, env: str) -> dict:
    if algo == "sac":
        if env == "portfolio":
            # as benchmarks/bench_portfolio.py: daily log returns in percent (reward_scale 100)
            # and a temperature that starts at 0.1 (alpha = 1 makes -alpha log pi of a
            # 20-asset policy dwarf the rewards; the critic then chases the entropy term)
            return {"actor_lr": 3e-4, "critic_lr": 3e-4, "alpha_lr": 3e-4,
                    "reward_scale": 100.0, "init_log_alpha": math.log(0.1)}
        return {"actor_lr": 1e-3, "critic_lr": 1e-3, "alpha_lr": 1e-3}
    return {}


def _fit_sac_steps(fields: dict, steps: int, explicit: set[str]) -> None:
    """Choose ``eval_interval`` / ``warmup_steps`` / ``buffer_size`` consistent with ``steps``."""
    from jaxstab.agents.sac import SACConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SACConfig)}
    e = int(fields.get("num_envs", defaults["num_envs"]))
    if steps < e:
        raise UsageError(f"--steps ({steps}) must be at least num_envs ({e})")
    if "eval_interval" not in explicit:
        chunks = max(1, min(10, steps // e))
        fields["eval_interval"] = e * max(1, steps // (e * chunks))
    interval = int(fields["eval_interval"])
    if interval % e:
        raise UsageError(f"eval_interval ({interval}) must be a multiple of num_envs ({e})")
    total = interval * max(1, steps // interval)
    if total != steps:
        print(f"note: steps rounded to {total} (a multiple of eval_interval={interval})",
              file=sys.stderr)
    fields["total_steps"] = total
    batch = int(fields.get("batch_size", defaults["batch_size"]))
    if "warmup_steps" not in explicit:
        fields["warmup_steps"] = max(batch, min(int(defaults["warmup_steps"]), total // 10))
    if "buffer_size" not in explicit:
        fields["buffer_size"] = max(batch, min(int(defaults["buffer_size"]), total))


def resolve(algo: str = "sac", env: str = DEFAULT_ENV, *, seeds: int | None = None,
            steps: int | None = None, overrides: Sequence[str] | None = None,
            seed: int = 0) -> RunSpec:
    """Resolve names, defaults and ``key=value`` overrides into a validated :class:`RunSpec`.

    Args:
      algo: ``"sac"`` or ``"ppo"``.
      env: ``"portfolio"`` or a gymnax environment name.
      seeds: seeds trained at once (default :func:`default_seeds`).
      steps: environment transitions per seed (default :func:`default_steps`); for SAC the
        evaluation interval (the chunk) is chosen to give about 10 chunks.
      overrides: ``["key=value", ...]`` (see the module docstring).
      seed: base PRNG seed.

    Returns:
      :class:`RunSpec`.

    Raises:
      UsageError: unknown algorithm / environment / key, a value that does not parse, or a
        combination the Config rejects (its message is kept).

    Example:
      >>> spec = resolve("sac", "Pendulum-v1", seeds=2, steps=2000, overrides=["actor_lr=3e-4"])
      >>> spec.config.total_steps, spec.hparams["actor_lr"]
      (2000, 0.0003)
    """
    if algo not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {algo!r}; valid: {', '.join(ALGORITHMS)}")
    seeds = default_seeds(env) if seeds is None else seeds
    if not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"--seeds must be a positive integer, got {seeds!r}")
    steps = default_steps(algo, env) if steps is None else steps
    if not isinstance(steps, int) or steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {steps!r}")
    pairs = parse_overrides(overrides)

    cfg_cls, hp_cls = _algo_classes(algo)
    cfg_types = _dataclass_types(cfg_cls)
    hp_types = _hparam_types(hp_cls)

    # environment keyword arguments first (they decide the action space)
    env_kwargs: dict[str, Any] = {}
    env_pairs = [(k[4:], v) for k, v in pairs if k.startswith("env.")]
    if env_pairs:
        if env not in env_names():
            raise UsageError(f"unknown environment {env!r}; valid: {', '.join(env_names())}")
        types_ = _env_kwarg_types(env)
        for k, v in env_pairs:
            if types_ is not None and k not in types_:
                raise UsageError(f"unknown key env.{k} for {env}; valid env keys: "
                                 f"{', '.join('env.' + n for n in types_) or '(none)'}")
            ann = types_[k][0] if types_ is not None else Any
            env_kwargs[k] = parse_value(f"env.{k}", v, ann)
    env_obj, env_params = make_env(env, **env_kwargs)
    info = space_info(env_obj, env_params)

    cfg_fields = _base_config(algo, env, info)
    hp_values = _base_hparams(algo, env)
    explicit: set[str] = set()
    for k, v in pairs:
        if k.startswith("env."):
            continue
        head, _, sub = k.removeprefix("cfg.").partition(".")
        if sub and head in cfg_types and dataclasses.is_dataclass(cfg_types[head]):
            nested_cls = cfg_types[head]
            nested_types = _dataclass_types(nested_cls)
            if sub not in nested_types:
                raise UsageError(f"unknown key {k!r}; valid {head}.* keys: "
                                 f"{', '.join(head + '.' + n for n in sorted(nested_types))}")
            cur = cfg_fields.get(head) or nested_cls()
            try:
                cfg_fields[head] = dataclasses.replace(
                    cur, **{sub: parse_value(k, v, nested_types[sub])})
            except (TypeError, ValueError) as e:
                raise UsageError(f"invalid {k}={v!r}: {e}") from e
            explicit.add(head)
            continue
        where, name = _classify(k, cfg_types, hp_types, algo)
        if where == "cfg":
            if dataclasses.is_dataclass(cfg_types[name]):
                sub_keys = ", ".join(f"{name}.{n}" for n in _dataclass_types(cfg_types[name]))
                raise UsageError(f"{name} is a nested config: set its fields as {sub_keys}")
            cfg_fields[name] = parse_value(k, v, cfg_types[name])
            explicit.add(name)
        else:
            hp_values[name] = parse_value(k, v, hp_types[name])
    if algo == "sac":
        if "total_steps" in explicit:
            steps = int(cfg_fields["total_steps"])
        _fit_sac_steps(cfg_fields, steps, explicit)
    else:
        if "total_timesteps" not in explicit:
            cfg_fields["total_timesteps"] = steps
    try:
        cfg = cfg_cls(**cfg_fields)
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid {cfg_cls.__name__}: {e}") from e
    try:
        if algo == "sac":
            from jaxstab.agents.sac import default_hparams

            hp = default_hparams(cfg, info["action_dim"], **hp_values)
        else:
            from jaxstab.agents.ppo import ppo_hparams

            hp = ppo_hparams(**hp_values)
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid hyperparameters: {e}") from e
    hparams = {k: float(np.asarray(v)) for k, v in hp._asdict().items()}
    for k, v in hparams.items():
        if not math.isfinite(v):
            raise UsageError(f"hyperparameter {k} must be finite, got {v}")
    return RunSpec(algo=algo, env=env, env_kwargs=env_kwargs, seeds=seeds, seed=int(seed),
                   config=cfg, hparams=hparams, overrides=[f"{k}={v}" for k, v in pairs])


def _classify(key: str, cfg_types: Mapping[str, Any], hp_types: Mapping[str, Any],
              algo: str) -> tuple[str, str]:
    if key.startswith("cfg."):
        name = key[4:]
        if name in cfg_types:
            return "cfg", name
    elif key.startswith("hp."):
        name = key[3:]
        if name in hp_types:
            return "hp", name
    else:
        in_cfg, in_hp = key in cfg_types, key in hp_types
        if in_cfg and in_hp:
            raise UsageError(f"{key!r} is both a config field and a hyperparameter of {algo}: "
                             f"write cfg.{key}=... or hp.{key}=...")
        if in_cfg:
            return "cfg", key
        if in_hp:
            return "hp", key
    raise UsageError(
        f"unknown key {key!r} for {algo}; valid keys:\n"
        f"  config (static): {', '.join(sorted(cfg_types))}\n"
        f"  hparams (traced): {', '.join(sorted(hp_types))}\n"
        f"  environment: env.<argument> (`jaxstab keys --algo ALGO --env NAME` lists them)")


def spec_from_json(data: Mapping[str, Any]) -> RunSpec:
    """Rebuild a :class:`RunSpec` from ``config.json``'s content."""
    cfg_cls, _ = _algo_classes(data["algo"])
    types_ = _dataclass_types(cfg_cls)
    fields = {k: _from_json_value(v, types_[k]) for k, v in data["config"].items()
              if k in types_}
    return RunSpec(algo=data["algo"], env=data["env"], env_kwargs=dict(data["env_kwargs"]),
                   seeds=int(data["seeds"]), seed=int(data["seed"]), config=cfg_cls(**fields),
                   hparams=dict(data["hparams"]), overrides=list(data.get("overrides", [])))


def _from_json_value(v: Any, annotation: Any) -> Any:
    if isinstance(v, dict) and dataclasses.is_dataclass(annotation):
        types_ = _dataclass_types(annotation)
        return annotation(**{k: _from_json_value(x, types_[k]) for k, x in v.items()
                             if k in types_})
    if isinstance(v, list):
        return tuple(v)
    return v


def hparams_of(spec: RunSpec) -> Any:
    """The traced HParams NamedTuple of a spec (one setting, 0-d float32 leaves)."""
    import jax.numpy as jnp

    _, hp_cls = _algo_classes(spec.algo)
    return hp_cls(**{k: jnp.asarray(v, jnp.float32) for k, v in spec.hparams.items()})


def seed_keys(spec: RunSpec) -> Any:
    """``[seeds]`` PRNG keys of a spec."""
    import jax

    return jax.random.split(jax.random.key(spec.seed), spec.seeds)


def batched_hparams(spec: RunSpec) -> Any:
    """HParams with every leaf broadcast to ``[seeds]``."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (spec.seeds,)), hparams_of(spec))


def config_keys(algo: str) -> dict[str, list[str]]:
    """Valid override keys of an algorithm: ``{"config": [...], "hparams": [...]}``."""
    cfg_cls, hp_cls = _algo_classes(algo)
    return {"config": sorted(_dataclass_types(cfg_cls)), "hparams": sorted(hp_cls._fields)}


# --------------------------------------------------------------------------- run directory
def versions() -> dict:
    """Python, platform and library versions (for ``config.json`` and benchmark records)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for n in ("jaxstab", "jax", "jaxlib", "flax", "optax", "distrax", "gymnax", "numpy",
              "orbax-checkpoint"):
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    import jaxstab

    out["jaxstab_source"] = jaxstab.__version__
    try:
        import jax

        out["backend"] = jax.default_backend()
    except Exception:  # noqa: BLE001
        pass
    return out


def default_run_dir(spec: RunSpec, root: str = "runs") -> str:
    """``runs/<algo>-<env>-<UTC timestamp>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return os.path.join(root, f"{spec.algo}-{spec.env}-{stamp}")


def write_json(path: str, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_spec(run_dir: str) -> RunSpec:
    """Read ``RUN_DIR/config.json`` back into a :class:`RunSpec`.

    Raises:
      UsageError: if the directory or its config.json is missing or unreadable.
    """
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir} is not a run directory (no config.json)")
    try:
        return spec_from_json(read_json(path))
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: unreadable run config ({type(e).__name__}: {e})") from e


def flatten_outputs(outputs: Any) -> dict[str, np.ndarray]:
    """Flatten a (nested) dict/tuple of ``[S, ...]`` arrays to ``{"a/b": np.ndarray}``."""
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(outputs)
    out = {}
    for path, leaf in flat:
        parts = []
        for p in path:
            for attr in ("key", "name", "idx"):
                if hasattr(p, attr):
                    parts.append(str(getattr(p, attr)))
                    break
        out["/".join(parts) or "value"] = np.asarray(leaf)
    return out


_UNMASKED = ("updated", "reward", "eval_return", "episode_return", "episodes")


def reduce_chunk(outputs: Any, seeds: int) -> dict[str, list[float]]:
    """Reduce one chunk's outputs (leaves ``[S, ...]``) to per-seed means ``{name: [S]}``.

    A leaf with a sibling named ``updated`` of the same shape (SAC's learning-started flag) is
    averaged over the entries where it is 1 only (NaN if none); others over all entries.
    """
    flat = flatten_outputs(outputs)
    res = {}
    for name, arr in flat.items():
        if arr.ndim == 0 or arr.shape[0] != seeds:
            continue
        if arr.dtype.kind not in "fiub":
            continue
        a = arr.reshape(seeds, -1).astype(np.float64)
        base = name.rsplit("/", 1)[0] + "/updated" if "/" in name else "updated"
        mask = flat.get(base)
        leaf_name = name.rsplit("/", 1)[-1]
        if mask is not None and mask.shape == arr.shape and leaf_name not in _UNMASKED:
            m = mask.reshape(seeds, -1).astype(np.float64)
            cnt = m.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                vals = np.where(cnt > 0, (a * m).sum(1) / np.maximum(cnt, 1), np.nan)
        else:
            vals = a.mean(1) if a.shape[1] else np.full((seeds,), np.nan)
        res[_short(name)] = [None if not np.isfinite(v) and np.isnan(v) else float(v)
                             for v in vals]
    return res


def _short(name: str) -> str:
    for prefix in ("metrics/", "0/", "1/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


class MetricsWriter:
    """Append one JSON line per chunk to ``metrics.jsonl`` (``on_chunk`` callback of the loop).

    Args:
      path: the metrics.jsonl path.
      seeds: number of seeds (leading axis of every output leaf).
      steps_per_chunk: environment transitions per seed in one chunk (for the ``step`` field).
    """

    def __init__(self, path: str, seeds: int, steps_per_chunk: int) -> None:
        self.path = path
        self.seeds = seeds
        self.steps_per_chunk = steps_per_chunk
        self.t0 = time.perf_counter()
        self._truncated = False
        self.last: dict | None = None

    def truncate_from(self, chunk: int) -> None:
        """Drop lines with ``chunk >= chunk`` (a resumed run re-writes them)."""
        if not os.path.exists(self.path):
            return
        keep = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn last line of a killed run
                if int(rec.get("chunk", -1)) < chunk:
                    keep.append(json.dumps(rec))
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(k + "\n" for k in keep))
        os.replace(tmp, self.path)

    def __call__(self, chunk_index: Any, outputs: Any) -> None:
        chunk = int(np.asarray(chunk_index))
        if not self._truncated:
            self.truncate_from(chunk)
            self._truncated = True
        rec = {"chunk": chunk, "step": (chunk + 1) * self.steps_per_chunk,
               "time_s": round(time.perf_counter() - self.t0, 3)}
        rec.update(reduce_chunk(outputs, self.seeds))
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        self.last = rec


def read_metrics(run_dir: str) -> list[dict]:
    """Parse ``RUN_DIR/metrics.jsonl`` (skipping a torn last line), sorted by chunk."""
    path = os.path.join(run_dir, "metrics.jsonl")
    recs = []
    if not os.path.exists(path):
        return recs
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                recs.append(json.loads(line))
            except ValueError:
                continue
    recs.sort(key=lambda r: r.get("chunk", 0))
    return recs


def metric_matrix(records: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    """``[chunks, seeds]`` float array of one metric (NaN for missing values)."""
    rows = []
    for r in records:
        v = r.get(name)
        if v is None:
            continue
        rows.append([np.nan if x is None else float(x) for x in v])
    return np.asarray(rows, dtype=np.float64)


RETURN_KEYS = ("eval_return", "eval_returns", "episode_return", "return", "reward")


def return_key(records: Sequence[Mapping[str, Any]]) -> str | None:
    """The metric used as 'return' in summaries and learning curves."""
    if not records:
        return None
    names = records[-1].keys()
    for k in RETURN_KEYS:
        if k in names:
            return k
    for k in names:
        if "return" in k:
            return k
    return None


# --------------------------------------------------------------------------- training
def _steps_per_chunk(spec: RunSpec, num_chunks: int) -> int:
    cfg = spec.config
    total = cfg.total_steps if spec.algo == "sac" else cfg.num_updates * cfg.batch_size
    return max(1, total // max(1, num_chunks))


def make_runner(spec: RunSpec, env: Any, env_params: Any) -> Any:
    """``Runner`` of the spec's algorithm (``jaxstab.training.<algo>.make_runner``).

    Zero-size carry leaves (SAC's ``policy_state [num_envs, 0]`` of a stateless actor) need no
    special care: :mod:`jaxstab.checkpoint` leaves them out of the saved arrays and recreates
    them from the spec on restore.
    """
    if spec.algo == "sac":
        from jaxstab.training import sac as T
    else:
        from jaxstab.training import ppo as T
    if not hasattr(T, "make_runner"):
        return _single_chunk_runner(T.make_train(spec.config, env, env_params))
    return T.make_runner(spec.config, env, env_params)


def _single_chunk_runner(train: Callable) -> Any:
    """Fallback when the algorithm has no chunked runner: the whole scan as one chunk."""
    import jax

    from jaxstab.training.loop import Runner

    def init(key, hparams):
        return key

    def run_chunk(carry, hparams, chunk_index):
        return carry, train(carry, hparams)

    def finalize(carry, stacked):
        return jax.tree_util.tree_map(lambda x: x[0], stacked)

    return Runner(init, run_chunk, 1, finalize)


def policy_params(spec: RunSpec, result: Any) -> Any:
    """The policy parameters of a (vmapped) training result, leaves ``[S, ...]``."""
    if spec.algo == "sac":
        state = result.state if hasattr(result, "state") else result[0]
        return state.agent.actor_params
    state = result[0] if isinstance(result, tuple) and not hasattr(result, "ppo") else result
    return state.ppo.params


def _policy_template(spec: RunSpec, env: Any, env_params: Any) -> Any:
    """Abstract ``[S, ...]`` policy parameters (restore target of ``RUN_DIR/policy``)."""
    import jax

    info = space_info(env, env_params)
    keys = seed_keys(spec)
    if spec.algo == "sac":
        from jaxstab.agents.sac import make_sac

        init, _ = make_sac(info["obs_dim"], info["action_dim"], spec.config)
        hp = batched_hparams(spec)
        st = jax.eval_shape(jax.vmap(init), keys, hp)
        return st.actor_params
    from jaxstab.agents.ppo import make_ppo, networks_from_config

    nets = networks_from_config(spec.config, info["obs_dim"], info["action_dim"])
    ppo = make_ppo(spec.config, nets)
    return jax.eval_shape(jax.vmap(ppo.init), keys).params


def train_run(spec: RunSpec, run_dir: str, *, resume: bool = False, progress: bool = True,
              save_every: int | None = None, keep: int = 2, argv: Sequence[str] | None = None,
              quiet: bool = False, seeds_per_batch: int | None = None,
              mesh: Any = None) -> dict:
    """Train ``spec`` into ``run_dir`` (config, metrics, checkpoints, policy, plots, summary).

    Args:
      spec: resolved run.
      run_dir: output directory (created).
      resume: continue from the last complete checkpoint in ``run_dir/checkpoints``.
      progress: print the driver's progress line.
      save_every: checkpoint every this many chunks (the last chunk is always saved); None:
        every chunk for SAC (long chunks), every ``ceil(num_chunks / 5)`` for PPO (many short
        chunks, where a save costs about as much as the chunk's compute).
      keep: checkpoints kept.
      argv: the command line recorded in config.json.
      quiet: print nothing but the progress line.
      seeds_per_batch: run the seeds in groups of this size (``loop.run``'s option; None: one
        vmap over all seeds). An execution choice, not part of the run: not stored.
      mesh: split the seeds over this device mesh (``loop.run``'s option; e.g. one CPU device
        per core, ``jaxstab train --cpu-devices``). An execution choice: not stored.

    Returns:
      The summary dict (also written to ``summary.json``).
    """
    import jax

    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(os.path.join(run_dir, "plots"), exist_ok=True)
    cfg_json = spec.to_json()
    cfg_json["versions"] = versions()
    cfg_json["command"] = list(sys.argv if argv is None else argv)
    cfg_json["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    cfg_path = os.path.join(run_dir, "config.json")
    if resume and os.path.exists(cfg_path):
        prev = read_json(cfg_path)
        cfg_json["created"] = prev.get("created", cfg_json["created"])
        cfg_json["resumed"] = prev.get("resumed", []) + [_dt.datetime.now(
            _dt.timezone.utc).isoformat()]
    write_json(cfg_path, cfg_json)

    env, env_params = make_env(spec.env, **spec.env_kwargs)
    runner = make_runner(spec, env, env_params)
    keys = seed_keys(spec)
    hps = batched_hparams(spec)
    if save_every is None:
        save_every = 1 if spec.algo == "sac" else max(1, math.ceil(runner.num_chunks / 5))
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if not resume and os.path.exists(metrics_path):
        os.remove(metrics_path)
    writer = MetricsWriter(metrics_path, spec.seeds, _steps_per_chunk(spec, runner.num_chunks))
    from jaxstab.training import loop

    if not quiet:
        print(f"training {spec.algo} on {spec.env}: {spec.seeds} seed(s) x "
              f"{_steps_per_chunk(spec, runner.num_chunks) * runner.num_chunks} steps in "
              f"{runner.num_chunks} chunks -> {run_dir}", flush=True)
    t0 = time.perf_counter()
    kwargs = dict(checkpoint_dir=os.path.join(run_dir, "checkpoints"), save_every=save_every,
                  keep=keep, resume=resume, progress=progress, on_chunk=writer,
                  seeds_per_batch=seeds_per_batch, mesh=mesh)
    try:
        carry, stacked = loop.run(runner, keys, hps, metadata={"run": spec.to_json()},
                                  **kwargs)
    except FileExistsError as e:
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or "
                         "choose another --out") from e
    except ValueError as e:
        if resume and "different run" in str(e):
            raise UsageError(f"cannot resume {run_dir}: {e}") from e
        raise
    result = loop.finalize(runner, carry, stacked)
    jax.block_until_ready(result)
    wall = time.perf_counter() - t0

    from jaxstab.checkpoint import save_pytree

    save_pytree(os.path.join(run_dir, "policy"), policy_params(spec, result),
                {"algo": spec.algo, "env": spec.env}, overwrite=True)
    records = read_metrics(run_dir)
    summary = summarize(spec, records, wall_s=wall)
    summary["chunks"] = runner.num_chunks
    write_json(os.path.join(run_dir, "summary.json"), summary)
    try:
        from jaxstab import plots

        summary["plots"] = plots.learning_curves(records, os.path.join(run_dir, "plots"),
                                                 title=f"{spec.algo} on {spec.env}")
        write_json(os.path.join(run_dir, "summary.json"), summary)
    except ImportError as e:  # matplotlib missing: the run itself is still complete
        print(f"warning: no plots ({e})", file=sys.stderr)
    return summary


def summarize(spec: RunSpec, records: Sequence[Mapping[str, Any]], *,
              wall_s: float | None = None) -> dict:
    """Final per-seed values (last chunk) of every metric, with mean and std over seeds."""
    final = {}
    if records:
        for name, vals in records[-1].items():
            if name in ("chunk", "step", "time_s") or not isinstance(vals, list):
                continue
            arr = np.asarray([np.nan if v is None else v for v in vals], np.float64)
            final[name] = {"per_seed": [None if np.isnan(v) else float(v) for v in arr],
                           "mean": _nanstat(np.nanmean, arr), "std": _nanstat(np.nanstd, arr)}
    steps = records[-1]["step"] if records else 0
    rk = return_key(records)
    out = {"algo": spec.algo, "env": spec.env, "seeds": spec.seeds, "steps_per_seed": steps,
           "return_key": rk, "final_return": final.get(rk) if rk else None, "final": final}
    if wall_s is not None:
        out["wall_s"] = round(wall_s, 2)
        out["env_steps_per_s"] = round(steps * spec.seeds / wall_s, 1) if wall_s > 0 else None
    return out


def _nanstat(fn: Callable, arr: np.ndarray) -> float | None:
    if not np.isfinite(arr).any():
        return None
    return float(fn(arr[np.isfinite(arr)]))


# --------------------------------------------------------------------------- evaluation
def load_policy(run_dir: str, spec: RunSpec, env: Any, env_params: Any) -> Any:
    """Restore ``RUN_DIR/policy`` (leaves ``[S, ...]``).

    Raises:
      UsageError: if the run has no saved policy (not finished).
    """
    from jaxstab.checkpoint import restore_pytree

    path = os.path.join(run_dir, "policy")
    if not os.path.isdir(path):
        raise UsageError(f"{run_dir} has no trained policy yet (run `jaxstab train --out "
                         f"{run_dir} --resume` to finish it)")
    params, _ = restore_pytree(path, _policy_template(spec, env, env_params))
    return params


def make_policy_fn(spec: RunSpec, env: Any, env_params: Any
                   ) -> tuple[Callable[[Any, Any, Any], tuple[Any, Any]], Any]:
    """Deterministic policy of one seed with an explicit policy state.

    Returns:
      ``(policy, initial_state)``: ``policy(params, obs [obs_dim], pstate) -> (env action,
      pstate)`` and the initial policy state (``[0]`` for stateless policies; the IRT actor's
      prototype weights ``[M]``).
    """
    import jax.numpy as jnp

    info = space_info(env, env_params)
    space = env.action_space(env_params)
    if spec.algo == "sac":
        from jaxstab.agents import sac as A

        shape = tuple(space.shape)
        if spec.config.policy == "tanh_gaussian":
            low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), shape).reshape(-1)
            high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), shape).reshape(-1)

            def to_env(a):
                return (low + 0.5 * (a + 1.0) * (high - low)).reshape(shape)
        else:
            def to_env(a):
                return a.reshape(shape)

        if hasattr(A, "make_sac_acting"):
            acting = A.make_sac_acting(info["action_dim"], spec.config)
            init_state = acting.initial_policy_state(1)[0]

            def policy(params, obs, pstate):
                a, new = acting.mode(params, jnp.reshape(obs, (1, -1)).astype(jnp.float32),
                                     pstate[None])
                return to_env(a[0]), new[0]

            return policy, init_state
        _, det, _ = A.make_sac_actor(info["action_dim"], spec.config)

        def policy(params, obs, pstate):
            a = det(params, jnp.reshape(obs, (1, -1)).astype(jnp.float32))[0]
            return to_env(a), pstate

        return policy, jnp.zeros((0,), jnp.float32)
    from jaxstab.agents.ppo import networks_from_config
    from jaxstab.agents.ppo.networks import env_action

    nets = networks_from_config(spec.config, info["obs_dim"], info["action_dim"])
    kind = spec.config.policy_kind
    low = high = None
    if not info["discrete"]:
        low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), (info["action_dim"],))
        high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), (info["action_dim"],))

    def policy(params, obs, pstate):
        pout = nets.apply_policy(params, jnp.reshape(obs, (1, -1)).astype(jnp.float32))
        raw = jnp.argmax(pout.loc, axis=-1) if kind == "discrete" else pout.loc
        return env_action(kind, raw, low, high)[0], pstate

    return policy, jnp.zeros((0,), jnp.float32)


def episode_returns(env: Any, env_params: Any, policy: Callable, init_state: Any, params: Any,
                    key: Any, episodes: int, max_steps: int) -> Any:
    """Undiscounted returns ``[episodes]`` of a deterministic policy (one seed's params)."""
    import jax
    import jax.numpy as jnp

    k_reset, k_run = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, episodes),
                                                        env_params)
    pstate = jnp.broadcast_to(init_state, (episodes,) + init_state.shape)

    def step(carry, k):
        obs, state, pstate, ret, alive = carry
        act, pstate = jax.vmap(policy, in_axes=(None, 0, 0))(params, obs, pstate)
        obs, state, r, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k, episodes), state, act, env_params)
        ret = ret + jnp.where(alive, r.astype(jnp.float32), 0.0)
        alive = alive & ~(term.astype(bool) | trunc.astype(bool))
        return (obs, state, pstate, ret, alive), None

    init = (obs, state, pstate, jnp.zeros((episodes,), jnp.float32),
            jnp.ones((episodes,), bool))
    (_, _, _, ret, _), _ = jax.lax.scan(step, init, jax.random.split(k_run, max_steps))
    return ret


PORTFOLIO_COLUMNS = ("sharpe", "sortino", "max_drawdown", "calmar", "annual_return",
                     "annual_volatility", "turnover")
PORTFOLIO_SPLITS = ("train", "validation", "test")


def _fmt_table(rows: Sequence[tuple[str, Mapping[str, Any]]], columns: Sequence[str]) -> str:
    head = "| policy | " + " | ".join(columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    lines = [head, sep]
    for name, vals in rows:
        cells = []
        for c in columns:
            v = vals.get(c)
            if isinstance(v, str):
                cells.append(v)
            elif v is None or not np.isfinite(v):
                cells.append("nan")
            else:
                cells.append(f"{v:.4g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _portfolio_evaluate(run_dir: str, spec: RunSpec, split: str, seed: int, quiet: bool
                        ) -> dict:
    import jax

    from jaxstab.envs import baselines as B

    if split not in PORTFOLIO_SPLITS:
        raise UsageError(f"unknown split {split!r}; valid: {', '.join(PORTFOLIO_SPLITS)}")
    kwargs = dict(spec.env_kwargs)
    kwargs["split"] = split
    env, env_params = make_env(spec.env, **kwargs)
    train_env, train_params = make_env(spec.env, **spec.env_kwargs)
    params = load_policy(run_dir, spec, train_env, train_params)
    policy, init_state = make_policy_fn(spec, env, env_params)

    def one(p, k):
        def pol(obs, pstate):
            return policy(p, obs, pstate)

        return B.evaluate_policy(env, env_params, pol, k, policy_state=init_state)

    keys = jax.random.split(jax.random.key(seed), spec.seeds)
    metrics, returns, weights = jax.jit(jax.vmap(one))(params, keys)
    metrics = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
    returns = np.asarray(returns, np.float64)
    weights = np.asarray(weights, np.float64)
    label = f"{spec.algo.upper()}" + ("+IRT" if getattr(spec.config, "actor", "") == "irt"
                                      else "")
    rows = [(f"{label} (mean +- std, {spec.seeds} seeds)",
             {c: f"{metrics[c].mean():.4g} +- {metrics[c].std():.2g}" for c in PORTFOLIO_COLUMNS
              if c in metrics})]
    rows += [(f"{label} seed {i}", {c: float(metrics[c][i]) for c in PORTFOLIO_COLUMNS
                                     if c in metrics}) for i in range(spec.seeds)]
    curves = {label: np.cumprod(1.0 + returns, axis=-1)}
    base_rec = {}
    for name in B.BASELINES:
        m, r, _ = B.baseline(name, env, env_params)
        m = {k: float(v) for k, v in m.items()}
        base_rec[name] = m
        rows.append((name, m))
        curves[name] = np.cumprod(1.0 + np.asarray(r, np.float64))
    table = _fmt_table(rows, PORTFOLIO_COLUMNS)
    record = {"run_dir": os.path.abspath(run_dir), "algo": spec.algo, "env": spec.env,
              "split": split,
              "agent": {k: {"per_seed": v.tolist(), "mean": float(v.mean()),
                            "std": float(v.std())} for k, v in metrics.items()},
              "baselines": base_rec, "table": table}
    path = os.path.join(run_dir, f"eval_{split}.json")
    record["path"] = path
    write_json(path, record)
    try:
        from jaxstab import plots

        dates = None
        try:
            from jaxstab.envs import data as D

            window = int(spec.env_kwargs.get("window", 20))
            dates = D.split(D.load_prices(), split, window=window).dates
            if len(dates) != returns.shape[-1]:
                dates = None
        except Exception:  # noqa: BLE001 - dates are decoration: fall back to day indices
            dates = None
        names = None
        try:
            from jaxstab.envs import data as D

            names = list(D.load_prices().assets)
            if env_params.num_actions > len(names):
                names.append("cash")
        except Exception:  # noqa: BLE001
            names = None
        record["plots"] = plots.portfolio_plots(
            curves, os.path.join(run_dir, "plots"), weights=weights[0], asset_names=names,
            dates=dates, title=f"{label} on the {split} split:", prefix=f"eval_{split}_")
        write_json(path, record)
    except ImportError as e:
        print(f"warning: no plots ({e})", file=sys.stderr)
    return record


def evaluate_run(run_dir: str, *, split: str | None = None, episodes: int = 10,
                 seed: int = 0, quiet: bool = False) -> dict:
    """Evaluate a finished run's policies; write ``eval_<split>.json`` and plots.

    For the portfolio environment the deterministic policy walks the whole ``split``
    (default ``"test"``) and is compared with the baselines (1/N, buy-and-hold, minimum
    variance) on the same metrics; plots: equity curves, drawdowns, weights over time.
    For gymnax environments: ``episodes`` deterministic episodes per seed.

    Returns:
      The evaluation record (also written to ``RUN_DIR/eval_<split>.json``).

    Raises:
      UsageError: bad run directory, split, or a run without a trained policy.
    """
    spec = load_spec(run_dir)
    if episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {episodes}")
    if spec.env == "portfolio":
        return _portfolio_evaluate(run_dir, spec, split or "test", seed, quiet)
    if split not in (None, "train"):
        raise UsageError(f"--split applies to the portfolio environment only ({spec.env} has "
                         "no data splits)")
    import jax

    env, env_params = make_env(spec.env, **spec.env_kwargs)
    params = load_policy(run_dir, spec, env, env_params)
    policy, init_state = make_policy_fn(spec, env, env_params)
    max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    keys = jax.random.split(jax.random.key(seed), spec.seeds)
    rets = jax.jit(jax.vmap(lambda p, k: episode_returns(env, env_params, policy, init_state, p,
                                                         k, episodes, max_steps)))(params, keys)
    rets = np.asarray(rets, np.float64)
    per_seed = rets.mean(axis=1)
    record = {"run_dir": os.path.abspath(run_dir), "algo": spec.algo, "env": spec.env,
              "split": "train", "episodes": episodes,
              "return_per_seed": per_seed.tolist(), "return_mean": float(per_seed.mean()),
              "return_std": float(per_seed.std()), "returns": rets.tolist()}
    record["path"] = os.path.join(run_dir, "eval_train.json")
    write_json(record["path"], record)
    try:
        from jaxstab import plots

        record["plots"] = [plots.return_histogram(rets, os.path.join(run_dir, "plots",
                                                                     "eval_returns.png"),
                                                  title=f"{spec.algo} on {spec.env}")]
        write_json(os.path.join(run_dir, "eval_train.json"), record)
    except ImportError as e:
        print(f"warning: no plots ({e})", file=sys.stderr)
    return record


__all__ = [
    "ALGORITHMS", "DEFAULT_ENV", "PORTFOLIO_COLUMNS", "PORTFOLIO_SPLITS", "MetricsWriter", "RunSpec", "UsageError", "batched_hparams",
    "config_keys", "default_run_dir", "env_names", "evaluate_run", "flatten_outputs",
    "load_spec", "make_env", "make_policy_fn", "metric_matrix", "parse_overrides",
    "parse_value", "read_metrics", "reduce_chunk", "resolve", "return_key", "seed_keys",
    "spec_from_json", "summarize", "train_run", "versions",
]
