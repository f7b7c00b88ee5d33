"""The wheel ships every package, including envs/ as jaxstab.envs."""

import os
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source_packages() -> set[str]:
    found = set()
    for top, prefix in (("jaxstab", "jaxstab"), ("envs", "jaxstab.envs")):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            if "__init__.py" in files and "__pycache__" not in dirpath:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, top))
                found.add(prefix if rel == "." else prefix + "." + rel.replace(os.sep, "."))
    return found


def test_pyproject_lists_every_package():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        listed = set(tomllib.load(fh)["tool"]["setuptools"]["packages"])
    assert _source_packages() == listed


@pytest.mark.slow
def test_wheel_installs_envs_as_subpackage(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), ROOT],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = list(wheel_dir.glob("jaxstab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "jaxstab/envs/__init__.py" in names
    assert "jaxstab/ops/sinkhorn.py" in names
    assert not any(n.startswith("envs/") for n in names), "envs must not be a top-level package"
    # the bundled market data and its licence notice ship inside the package
    assert "jaxstab/envs/data/sp500_20_daily.csv.gz" in names
    assert "jaxstab/envs/data/NOTICE-sp500.txt" in names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", "import jaxstab, jaxstab.envs, jaxstab.ops; print(jaxstab.__file__); "
                          "d = jaxstab.envs.load_prices(); print(d.prices.shape)"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, shape = out.stdout.strip().splitlines()[-2:]
    assert first.startswith(str(target))
    assert shape == "(8313, 20)"
