"""`deploy init`: a starter inventory, playbook, Dockerfile and train.py that load and validate."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from deployer.cli import main
from deployer.inventory.host import Host
from deployer.playbook import load, render
from deployer.playbook.starter import PYTORCH_IMAGE, files


def test_init_writes_a_project_that_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path)]) == 0
    for rel in files():
        assert (tmp_path / rel).is_file(), rel
    pb = load(str(tmp_path / "playbooks/train.yml"))
    assert pb.image.build is not None and pb.image.build.context == str(tmp_path)
    assert pb.run is not None and pb.run.gpus == "all"
    rendered = render(pb, Host("gpu01", {"data_root": "/data"}, ("gpus",)))
    assert rendered.run is not None and rendered.run.volumes == ("/data:/workspace/data",)
    assert rendered.command == ("python", "train.py", "--data", "/workspace/data")
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and f"FROM {PYTORCH_IMAGE}\n" in dockerfile
    assert PYTORCH_IMAGE.startswith("nvcr.io/nvidia/pytorch:") and PYTORCH_IMAGE.endswith("-py3")
    ast.parse((tmp_path / "train.py").read_text())  # valid Python
    assert "next steps" in capsys.readouterr().err


def test_init_inventory_loads_with_deployer_inventory(tmp_path: Path) -> None:
    from deployer.inventory import load as load_inventory

    assert main(["init", str(tmp_path)]) == 0
    inv = load_inventory(str(tmp_path / "inventories/hosts.yml"))
    hosts = {h.name: h for h in inv.select("gpus")}
    assert set(hosts) == {"gpu01", "gpu02"}
    assert hosts["gpu01"].vars["data_root"] == "/data"
    assert hosts["gpu02"].vars["data_root"] == "/mnt/nvme/data"
    assert hosts["gpu01"].user == "ubuntu"


def test_init_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train.py").write_text("mine\n")
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and os.path.join(str(tmp_path), "train.py") in err and "--force" in err
    assert (tmp_path / "train.py").read_text() == "mine\n"
    assert not (tmp_path / "Dockerfile").exists()  # nothing written at all
    assert main(["init", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "train.py").read_text() != "mine\n"
    assert "overwrote" in capsys.readouterr().err


def test_init_inventory_is_valid_for_ansible_too(tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess
    import sys

    exe = shutil.which("ansible-inventory") or str(Path(sys.executable).parent / "ansible-inventory")
    if not Path(exe).exists():
        pytest.skip("ansible-inventory is not installed")
    assert main(["init", str(tmp_path)]) == 0
    env = {**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true", "ANSIBLE_HOME": str(tmp_path / ".ansible"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible/tmp")}
    done = subprocess.run([exe, "-i", str(tmp_path / "inventories/hosts.yml"), "--list"],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert sorted(data["gpus"]["hosts"]) == ["gpu01", "gpu02"]
    assert data["_meta"]["hostvars"]["gpu02"]["data_root"] == "/mnt/nvme/data"


def test_playbook_check_without_inventory_still_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path)]) == 0
    (tmp_path / "inventories/hosts.yml").unlink()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEPLOY_INVENTORY", raising=False)
    capsys.readouterr()
    assert main(["playbook", "check"]) == 0  # finds playbooks/train.yml by itself
    err = capsys.readouterr().err
    assert "playbooks/train.yml: ok (train)" in err and "not rendered for any host" in err
