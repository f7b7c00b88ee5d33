"""jaxstab.runs: override parsing and validation, config round trip, metric reduction, files."""

import json
import math
import typing

import numpy as np
import pytest

from jaxstab import runs
from jaxstab.agents.ppo import PPOConfig
from jaxstab.agents.sac import SACConfig


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("text,ann,expected", [
    ("3", int, 3), ("1e5", int, 100000), ("100_000", int, 100000), ("0.5", float, 0.5),
    ("true", bool, True), ("No", bool, False), ("1", bool, True), ("off", bool, False),
    ("64,64", tuple[int, ...], (64, 64)), ("(32, 16)", tuple[int, ...], (32, 16)),
    ("nonfinite,kl", tuple[str, ...], ("nonfinite", "kl")), ("", tuple[int, ...], ()),
    ("none", float | None, None), ("2.5", float | None, 2.5), ("abc", str, "abc"),
    ("volatility", typing.Sequence[str], ("volatility",)),
])
def test_parse_value(text, ann, expected):
    assert runs.parse_value("k", text, ann) == expected


@pytest.mark.parametrize("text,ann", [("abc", int), ("1.5", int), ("maybe", bool),
                                      ("x", float), ("1,a", tuple[int, ...]),
                                      ("nan-ish", float | None)])
def test_parse_value_errors_name_the_key(text, ann):
    with pytest.raises(runs.UsageError, match="mykey"):
        runs.parse_value("mykey", text, ann)


def test_parse_overrides_needs_equals():
    assert runs.parse_overrides(["a=1", "b = x=y"]) == [("a", "1"), ("b", " x=y")]
    with pytest.raises(runs.UsageError, match="key=value"):
        runs.parse_overrides(["novalue"])
    with pytest.raises(runs.UsageError, match="key=value"):
        runs.parse_overrides(["=3"])


# ----------------------------------------------------------------------------- resolve
def test_resolve_sac_overrides_reach_config_and_hparams():
    spec = runs.resolve("sac", "Pendulum-v1", seeds=3, steps=3000,
                        overrides=["hidden_sizes=32,32", "actor_lr=1e-4", "hp.gamma=0.95",
                                   "cfg.max_grad_norm=none", "batch_size=64"])
    cfg = spec.config
    assert isinstance(cfg, SACConfig)
    assert cfg.hidden_sizes == (32, 32) and cfg.max_grad_norm is None and cfg.batch_size == 64
    assert spec.hparams["actor_lr"] == pytest.approx(1e-4)
    assert spec.hparams["gamma"] == pytest.approx(0.95)
    assert spec.seeds == 3
    # the chunking constraints of make_train hold
    assert cfg.total_steps == 3000
    assert cfg.total_steps % cfg.eval_interval == 0 and cfg.eval_interval % cfg.num_envs == 0
    assert cfg.batch_size <= cfg.warmup_steps <= cfg.total_steps
    hp = runs.batched_hparams(spec)
    assert hp.actor_lr.shape == (3,) and runs.seed_keys(spec).shape == (3,)


def test_resolve_ppo_discrete_and_steps():
    spec = runs.resolve("ppo", "CartPole-v1", seeds=1, steps=4096, overrides=["num_envs=8"])
    assert isinstance(spec.config, PPOConfig)
    assert spec.config.policy_kind == "discrete" and spec.config.num_envs == 8
    assert spec.config.total_timesteps == 4096
    cont = runs.resolve("ppo", "Pendulum-v1", seeds=1, steps=4096)
    assert cont.config.policy_kind == "gaussian"


def test_resolve_unknown_names_list_valid_ones():
    with pytest.raises(runs.UsageError, match="valid: sac, ppo"):
        runs.resolve("dqn", "CartPole-v1")
    with pytest.raises(runs.UsageError, match="CartPole-v1") as e:
        runs.resolve("ppo", "NoSuchEnv-v0")
    assert "unknown environment 'NoSuchEnv-v0'" in str(e.value)
    with pytest.raises(runs.UsageError) as e:
        runs.resolve("ppo", "CartPole-v1", steps=4096, overrides=["learning_rate=1e-3"])
    msg = str(e.value)
    assert "unknown key 'learning_rate'" in msg and "clip_eps" in msg and "num_envs" in msg


def test_resolve_ambiguous_key_needs_prefix():
    with pytest.raises(runs.UsageError, match="cfg.max_grad_norm"):
        runs.resolve("sac", "Pendulum-v1", steps=2000, overrides=["max_grad_norm=5"])
    spec = runs.resolve("sac", "Pendulum-v1", steps=2000, overrides=["hp.max_grad_norm=5"])
    assert spec.hparams["max_grad_norm"] == 5.0 and spec.config.max_grad_norm == 10.0


def test_resolve_invalid_values_keep_the_config_message():
    with pytest.raises(runs.UsageError, match="policy must be one of"):
        runs.resolve("sac", "Pendulum-v1", steps=2000, overrides=["policy=gaussian_mixture"])
    with pytest.raises(runs.UsageError, match="batch_size"):
        runs.resolve("sac", "Pendulum-v1", steps=2000, overrides=["batch_size=abc"])
    with pytest.raises(runs.UsageError, match="finite"):
        runs.resolve("ppo", "CartPole-v1", steps=4096, overrides=["lr=nan"])
    with pytest.raises(runs.UsageError, match="--seeds"):
        runs.resolve("ppo", "CartPole-v1", seeds=0)


def test_resolve_env_overrides():
    spec = runs.resolve("ppo", "CartPole-v1", steps=4096,
                        overrides=["env.max_steps_in_episode=100"])
    assert spec.env_kwargs == {"max_steps_in_episode": 100}
    _, params = runs.make_env("CartPole-v1", **spec.env_kwargs)
    assert params.max_steps_in_episode == 100
    with pytest.raises(runs.UsageError, match="env.max_steps_in_episode"):
        runs.resolve("ppo", "CartPole-v1", steps=4096, overrides=["env.nope=1"])


def test_nested_irt_override_and_json_round_trip():
    if not runs._sac_irt_available():  # pragma: no cover - IRT always ships with SAC now
        pytest.fail("SACConfig(actor='irt') is not available")
    spec = runs.resolve("sac", "portfolio", seeds=2, steps=800,
                        overrides=["irt.alpha=0.5", "irt.use_ot=false", "env.cost_bps=5"])
    assert spec.config.actor == "irt"
    assert spec.config.irt.alpha == 0.5 and spec.config.irt.use_ot is False
    assert spec.env_kwargs == {"cost_bps": 5.0}
    with pytest.raises(runs.UsageError, match="irt.alpha"):
        runs.resolve("sac", "portfolio", steps=800, overrides=["irt.nope=1"])
    back = runs.spec_from_json(json.loads(json.dumps(spec.to_json())))
    assert back.config == spec.config and hash(back.config) == hash(spec.config)
    assert back.hparams == spec.hparams and back.env_kwargs == spec.env_kwargs


def test_json_round_trip_ppo():
    spec = runs.resolve("ppo", "CartPole-v1", seeds=2, steps=4096,
                        overrides=["rollback=true", "rollback_triggers=nonfinite,kl"])
    back = runs.spec_from_json(json.loads(json.dumps(spec.to_json())))
    assert back.config == spec.config
    assert back.config.rollback_triggers == ("nonfinite", "kl")


# ----------------------------------------------------------------------------- metrics
def test_reduce_chunk_masks_sac_metrics_before_learning():
    rng = np.random.default_rng(0)
    loss = rng.normal(size=(2, 5)).astype(np.float32)
    updated = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], np.float32)
    reward = rng.normal(size=(2, 5)).astype(np.float32)
    out = {"critic_loss": loss, "updated": updated, "reward": reward,
           "eval_return": np.array([1.5, -2.0], np.float32), "scalar": np.float32(3.0)}
    red = runs.reduce_chunk(out, 2)
    assert red["critic_loss"][0] == pytest.approx(float(loss[0, 2:].mean()), rel=1e-6)
    assert red["critic_loss"][1] is None  # no update in that seed's chunk
    np.testing.assert_allclose(red["reward"], reward.mean(1), rtol=1e-6)  # not masked
    assert red["eval_return"] == [1.5, -2.0]
    assert red["updated"] == pytest.approx([0.6, 0.0])
    assert "scalar" not in red  # no seed axis


def test_metrics_writer_truncates_on_resume(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    w = runs.MetricsWriter(path, seeds=2, steps_per_chunk=10)
    for c in range(4):
        w(c, {"x": np.array([[c, c]], np.float32).T.repeat(3, 1)})
    with open(path, "a") as fh:
        fh.write('{"chunk": 4, "x": [1')  # torn line of a killed process
    w2 = runs.MetricsWriter(path, seeds=2, steps_per_chunk=10)
    w2(2, {"x": np.full((2, 3), 7.0, np.float32)})
    recs = runs.read_metrics(str(tmp_path))
    assert [r["chunk"] for r in recs] == [0, 1, 2]
    assert [r["step"] for r in recs] == [10, 20, 30]
    assert recs[2]["x"] == [7.0, 7.0] and recs[1]["x"] == [1.0, 1.0]
    m = runs.metric_matrix(recs, "x")
    assert m.shape == (3, 2)


def test_summarize_matches_numpy():
    recs = [{"chunk": 0, "step": 5, "time_s": 1.0, "episode_return": [1.0, 2.0, None]},
            {"chunk": 1, "step": 10, "time_s": 2.0, "episode_return": [3.0, 5.0, None],
             "loss": [0.5, 0.25, 1.0]}]
    spec = runs.resolve("ppo", "CartPole-v1", seeds=3, steps=4096)
    s = runs.summarize(spec, recs, wall_s=2.0)
    assert s["return_key"] == "episode_return"
    fr = s["final_return"]
    assert fr["mean"] == pytest.approx(4.0) and fr["std"] == pytest.approx(1.0)
    assert fr["per_seed"] == [3.0, 5.0, None]
    assert s["final"]["loss"]["mean"] == pytest.approx(np.mean([0.5, 0.25, 1.0]))
    assert s["env_steps_per_s"] == pytest.approx(10 * 3 / 2.0)
    assert math.isclose(s["final"]["loss"]["std"], float(np.std([0.5, 0.25, 1.0])))


def test_versions_and_run_dir_name():
    v = runs.versions()
    assert v["jax"] and v["python"]
    spec = runs.resolve("ppo", "CartPole-v1", seeds=1, steps=4096)
    assert runs.default_run_dir(spec).startswith("runs/ppo-CartPole-v1-")


def test_load_spec_errors(tmp_path):
    with pytest.raises(runs.UsageError, match="not a run directory"):
        runs.load_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(runs.UsageError, match="unreadable"):
        runs.load_spec(str(tmp_path))
