"""run.nodes, run.master_port, run.on_node_failure and run.network in a playbook: read, checked like
the flags, and carried into the RunSpec `deploy ship -p` starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import PlaybookError
from deployer.playbook import load
from deployer.playbook.render import render

ROOT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, run: str) -> object:
    path = tmp_path / "pb.yml"
    path.write_text("name: job\nimage: {ref: busybox}\nrun:\n" + run)
    return load(str(path))


def test_job_keys_reach_the_run_spec(tmp_path: Path) -> None:
    pb = _load(tmp_path, "  nodes: 2\n  master_port: 29600\n  on_node_failure: ignore\n  network: fabric\n")
    run = pb.run  # type: ignore[attr-defined]
    assert (run.nodes, run.master_port, run.on_node_failure, run.network) == (2, 29600, "ignore", "fabric")
    rendered = render(pb, {"inventory_hostname": "gpu01"})  # type: ignore[arg-type]
    assert rendered.run is not None and rendered.run.nodes == 2 and rendered.run.on_node_failure == "ignore"


@pytest.mark.parametrize("run, key_path, fragment", [
    ("  nodes: two\n", "run.nodes", "must be a whole number"),
    ("  nodes: 0\n", "run.nodes", "1 or more"),
    ("  nodes: 2\n  master_port: 70000\n", "run.master_port", "from 1 to 65534"),
    ("  master_port: 29500\n", "run.master_port", "multi-node job only"),
    ("  nodes: 2\n  on_node_failure: panic\n", "run.on_node_failure", "unknown policy"),
    ("  nodes: 2\n  place: any\n  gpus: 1\n", "run.nodes", "--nodes and --any"),
])
def test_job_keys_checked_like_the_flags(tmp_path: Path, run: str, key_path: str, fragment: str) -> None:
    with pytest.raises(PlaybookError) as info:
        _load(tmp_path, run)
    assert info.value.key_path == key_path and fragment in str(info.value)


def test_two_node_example_loads() -> None:
    pb = load(str(ROOT / "playbooks/ddp.yml"))
    assert pb.run is not None and pb.run.nodes == 2 and pb.run.master_port == 29500
    assert pb.run.on_node_failure == "stop-all"
