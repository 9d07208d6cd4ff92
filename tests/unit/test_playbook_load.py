"""Playbook validation: every error names file:line: key.path, exits 2 through the CLI, suggests typos."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from deployer.cli import main
from deployer.errors import PlaybookError
from deployer.playbook import load, loads

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
name: job
image:
  ref: busybox:latest
run:
  gpus: all
  volumes:
    - /srv/data:/data:ro
"""


def write(tmp_path: Path, text: str, name: str = "pb.yml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(tmp_path: Path, text: str) -> PlaybookError:
    with pytest.raises(PlaybookError) as info:
        load(write(tmp_path, text))
    return info.value


def test_examples_load_and_validate() -> None:
    sample = load(str(ROOT / "playbooks/sample.yml"))
    assert sample.name == "sample"
    assert sample.image.build is not None and sample.image.build.context == str(ROOT / "playbooks/sample")
    assert sample.image.build.tag == "sample"
    assert sample.run is not None and sample.run.volumes == ("{{ data_root }}:/data",)
    finetune = load(str(ROOT / "playbooks/finetune.yml"))
    assert finetune.run is not None and finetune.run.gpus == "all" and finetune.run.ipc == "host"
    assert finetune.image.build is not None
    assert dict(finetune.image.build.args)["BASE"].startswith("nvcr.io/nvidia/pytorch:")


def test_good_playbook_values(tmp_path: Path) -> None:
    pb = load(write(tmp_path, GOOD))
    assert pb.image.ref == "busybox:latest" and pb.image.build is None
    assert pb.run is not None and pb.run.volumes == ("/srv/data:/data:ro",)
    assert pb.line("run.volumes[0]") == 7
    assert pb.line("run.gpus") == 5
    assert pb.base_dir == str(tmp_path)


@pytest.mark.parametrize(
    "text, line, key_path, fragment",
    [
        ("name: job\nimage: {ref: busybox}\nrun:\n  volume: [/a:/b]\n", 4, "run.volume", "did you mean 'volumes'?"),
        ("name: job\nimage: {ref: busybox}\nrnu: {}\n", 3, "rnu", "did you mean 'run'?"),
        ("name: job\nimage:\n  ref: busybox\nship:\n  vai: tarball\n", 5, "ship.vai", "did you mean 'via'?"),
        ("name: job\nimage:\n  biuld: {context: .}\n", 3, "image.biuld", "did you mean 'build'?"),
    ],
)
def test_unknown_keys_suggest_the_right_one(tmp_path: Path, text: str, line: int, key_path: str, fragment: str) -> None:
    err = error_of(tmp_path, text)
    assert (err.line, err.key_path) == (line, key_path)
    assert "unknown key" in err.reason
    assert fragment in str(err)


@pytest.mark.parametrize(
    "text, line, key_path, fragment",
    [
        ("name: job\nimage: {ref: busybox}\nrun:\n  volumes: /a:/b\n", 4, "run.volumes", "must be a list"),
        ("name: job\nimage: {ref: busybox}\nrun:\n  mkdirs: maybe\n", 4, "run.mkdirs", "true or false"),
        ("name: job\nimage: {ref: busybox}\nrun:\n  env: [FOO]\n", 4, "run.env[0]", "KEY=value"),
        ("name: job\nimage: {ref: busybox}\nrun:\n  env:\n    A:\n", 5, "run.env.A", "string value"),
        ("name: job\nimage: {ref: busybox}\nrun:\n  workdir: [a]\n", 4, "run.workdir", "must be a string"),
        ("name: job\nimage: {ref: busybox}\nrun:\n  ipc: yes\n", 4, "run.ipc", "must be a string"),
        ("name: 7\nimage: {ref: busybox}\n", 1, "name", "must be a string"),
        ("name: Job\nimage: {ref: busybox}\n", 1, "name", "not a valid name"),
        ("image: {ref: busybox}\n", 1, "name", "missing"),
        ("name: job\n", 1, "image", "missing"),
        ("name: job\nimage: {ref: a, build: .}\n", 2, "image", "exactly one"),
        ("name: job\nimage: {ref: busybox}\nship: {via: carrier-pigeon}\n", 3, "ship.via", "must be one of"),
        ("name: job\nimage: {ref: busybox}\nship: {level: 40}\n", 3, "ship.level", "1 to 19"),
        ("name: job\nimage: {ref: busybox}\nship: {origin_pull: sometimes}\n", 3, "ship.origin_pull", "auto, never"),
        ("name: job\nimage: {ref: busybox}\nship: {codec: brotli}\n", 3, "ship.codec", "zstd, gzip"),
        ("name: job\nimage: {ref: busybox}\nship: {codec: gzp}\n", 3, "ship.codec", "did you mean 'gzip'?"),
        ("name: job\nimage: {ref: busybox}\nship: {origin_pull: nevr}\n", 3, "ship.origin_pull", "did you mean 'never'?"),
        ("name: job\nimage: {ref: busybox}\nvars: {1x: 2}\n", 3, "vars.1x", "variable names"),
        ("name: job\nimage: {ref: busybox}\nvars: [a]\n", 3, "vars", "must be a mapping"),
        ("name: job\nimage: {ref: busybox}\nrun:\n  command: echo {{ x\n", 4, "run.command", "template error"),
    ],
)
def test_type_errors(tmp_path: Path, text: str, line: int, key_path: str, fragment: str) -> None:
    err = error_of(tmp_path, text)
    assert (err.line, err.key_path) == (line, key_path), str(err)
    assert fragment in str(err)
    assert str(err).startswith(f"{tmp_path / 'pb.yml'}:{line}: {key_path}: ")


@pytest.mark.parametrize(
    "run, line, key_path, fragment",
    [
        ("  gpus: device=0,2\n", 4, "run.gpus", "cannot set both Count and DeviceIDs"),
        ("  gpus: some\n", 4, "run.gpus", "--gpus"),
        ("  volumes:\n    - /a:/a\n    - data/x:/b\n", 6, "run.volumes[1]", "relative"),
        ("  volumes:\n    - /a:/x\n    - /b:/x\n", 4, "run.volumes", "mounted twice"),
        ("  volumes: ['/a:/b:rx']\n", 4, "run.volumes[0]", "invalid mode"),
        ("  memory: 16q\n", 4, "run.memory", "not a size"),
        ("  shm_size: lots\n", 4, "run.shm_size", "not a size"),
        ("  restart: sometimes\n", 4, "run.restart", "unknown policy"),
        ("  ipc: shared\n", 4, "run.ipc", "unknown mode"),
        ("  workdir: work\n", 4, "run.workdir", "absolute"),
        ("  name: -bad\n", 4, "run.name", "container name"),
    ],
)
def test_run_values_checked_like_deploy_run_flags(tmp_path: Path, run: str, line: int, key_path: str, fragment: str) -> None:
    err = error_of(tmp_path, "name: job\nimage: {ref: busybox}\nrun:\n" + run)
    assert (err.line, err.key_path) == (line, key_path), str(err)
    assert fragment in str(err)


def test_quoted_device_list_is_accepted(tmp_path: Path) -> None:
    pb = load(write(tmp_path, "name: job\nimage: {ref: busybox}\nrun:\n  gpus: '\"device=0,2\"'\n"))
    assert pb.run is not None and pb.run.gpus == '"device=0,2"'
    pb = load(write(tmp_path, "name: job\nimage: {ref: busybox}\nrun:\n  gpus: 2\n"))
    assert pb.run is not None and pb.run.gpus == "2"


def test_yaml_problems(tmp_path: Path) -> None:
    err = error_of(tmp_path, "name: job\nimage: {ref: busybox}\nname: other\n")
    assert (err.line, err.key_path) == (3, "name") and "duplicate key" in str(err)
    err = error_of(tmp_path, "name: job\nimage: [ref\n")
    assert err.line == 3 and "invalid YAML" in str(err)
    err = error_of(tmp_path, "")
    assert "empty" in str(err)
    err = error_of(tmp_path, "- hosts: all\n  tasks: []\n")
    assert "not a list" in str(err) and "Ansible" in str(err)


def test_build_paths_are_checked_relative_to_the_playbook(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n")
    pb = load(write(tmp_path, "name: job\nimage:\n  build: app\n"))
    assert pb.image.build is not None and pb.image.build.context == str(tmp_path / "app")
    assert pb.image.build.tag == "job"
    err = error_of(tmp_path, "name: job\nimage:\n  build:\n    context: nope\n")
    assert (err.line, err.key_path) == (4, "image.build.context") and "no such directory" in str(err)
    err = error_of(tmp_path, "name: job\nimage:\n  build:\n    context: app\n    dockerfile: Other\n")
    assert (err.line, err.key_path) == (5, "image.build.dockerfile")
    err = error_of(tmp_path, "name: job\nimage:\n  build:\n    context: app\n    tag: Bad/Name\n")
    assert err.key_path == "image.build.tag" and "not a valid image reference" in str(err)


def test_host_independent_values_may_only_use_playbook_vars(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    pb = loads("name: job\nimage:\n  build:\n    tag: 'reg:5000/{{ team }}/job'\nvars: {team: ml}\n",
               str(tmp_path / "pb.yml"))
    assert pb.image.build is not None and pb.image.build.tag == "reg:5000/ml/job"
    with pytest.raises(PlaybookError) as info:
        loads("name: job\nimage:\n  ref: '{{ data_root }}/x'\n", str(tmp_path / "pb.yml"))
    assert info.value.key_path == "image.ref" and "undefined variable 'data_root'" in str(info.value)
    assert "same for every host" in str(info.value)


def test_var_cycles_are_refused(tmp_path: Path) -> None:
    err = error_of(tmp_path, "name: job\nimage: {ref: busybox}\nvars:\n  a: '{{ b }}'\n  b: '{{ a }}'\n")
    assert err.key_path == "vars" and "cycle" in str(err)


def test_cli_exit_2_with_file_line_and_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "name: job\nimage: {ref: busybox}\nrun:\n  gpus: all\n  volumez: [/a:/b]\n")
    code = main(["playbook", "check", "-p", path, "--no-hosts"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {path}:5: run.volumez: unknown key 'volumez'" in err
    assert "did you mean 'volumes'?" in err
    assert "Traceback" not in err


def test_cli_build_exit_2_on_invalid_playbook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "name: job\nimage:\n  build:\n    context: missing\n")
    assert main(["build", "-p", path]) == 2
    assert f"{path}:4: image.build.context: no such directory" in capsys.readouterr().err


def test_cli_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert main(["playbook", "check", "-p", path, "--no-hosts", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"name": "job"' in out and '"ref": "busybox:latest"' in out


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = os.path.join(str(tmp_path), "nope.yml")
    assert main(["playbook", "check", "-p", missing, "--no-hosts"]) == 2
    assert f"{missing}: no such playbook file" in capsys.readouterr().err
