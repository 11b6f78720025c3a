"""The Ray engine on a local Ray (2 CPUs) writes the same records and gives the same scores as the local one."""

import json

import pytest

from anomaly_vlm.cli import main

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _scores(out) -> dict[str, float]:
    return {r["path"]: r["score"] for r in json.loads((out / "results.json").read_text())["images"]}


@pytest.mark.parametrize("mode", ["reference", "mutual"])
def test_ray_and_local_engines_agree(local_ray, dataset_root, tmp_path, mode):
    paths = [str(dataset_root / "widget"), str(dataset_root / "gadget")]     # two products: mutual groups by product
    extra = ["--references", str(dataset_root / "widget" / "train")] if mode == "reference" else []
    common = ["--mode", mode, "--features", "builtin", "--no-maps", "--threshold", "0.5", *extra]
    assert main(["score", *paths, "--out", str(tmp_path / "local"), *common]) == 0
    assert main(["score", *paths, "--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-actors", "2", *common]) == 0
    local, remote = _scores(tmp_path / "local"), _scores(tmp_path / "ray")
    assert local.keys() == remote.keys() and len(local) > 12
    assert all(local[p] == pytest.approx(remote[p], abs=1e-6) for p in local)
    names = lambda out: sorted(p.name for p in (out / "records").glob("*.json"))   # noqa: E731
    assert names(tmp_path / "local") == names(tmp_path / "ray")                     # the same records, by fingerprint
