"""Per-host rendering: inventory vars into run values, strict undefined variables, RunSpec conversion."""
from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import PlaybookError
from deployer.inventory.host import Host
from deployer.playbook import find_default, load, loads, render, run_spec
from deployer.runs.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
PB = """\
name: job
image: {ref: busybox}
run:
  gpus: "{{ gpus_spec }}"
  volumes:
    - "{{ data_root }}/imagenet:/data:ro"
    - "{{ data_root }}/out/{{ inventory_hostname }}:/out"
  env:
    DATASET: "{{ dataset }}"
    EPOCHS: 3
    DEBUG: yes
  command: python train.py --data /data --tag '{{ tag }} run'
vars:
  dataset: imagenet
  tag: "{{ dataset }}-v1"
  gpus_spec: all
"""


def host(name: str, groups: tuple[str, ...] = ("gpus",), **variables: object) -> Host:
    return Host(name=name, vars=variables, groups=groups)


def test_host_vars_render_into_volumes() -> None:
    pb = loads(PB, "/tmp/pb.yml")
    a = render(pb, host("gpu01", data_root="/srv/a"))
    b = render(pb, host("gpu02", data_root="/mnt/b"))
    assert a.run is not None and b.run is not None
    assert a.run.volumes == ("/srv/a/imagenet:/data:ro", "/srv/a/out/gpu01:/out")
    assert b.run.volumes == ("/mnt/b/imagenet:/data:ro", "/mnt/b/out/gpu02:/out")
    assert a.run.env == (("DATASET", "imagenet"), ("EPOCHS", "3"), ("DEBUG", "true"))
    # The command is rendered, then split like a shell would.
    assert a.command == ("python", "train.py", "--data", "/data", "--tag", "imagenet-v1 run")
    assert a.host == "gpu01" and a.vars["tag"] == "imagenet-v1"


def test_inventory_vars_override_playbook_vars() -> None:
    pb = loads(PB, "/tmp/pb.yml")
    r = render(pb, host("gpu01", data_root="/d", dataset="coco", gpus_spec='"device=0,1"'))
    assert r.run is not None
    assert dict(r.run.env)["DATASET"] == "coco"
    assert r.command[-1] == "coco-v1 run"  # playbook var `tag` sees the host's `dataset`
    assert r.run.gpus == '"device=0,1"'


def test_plain_mapping_of_host_vars() -> None:
    pb = loads(PB, "/tmp/pb.yml")
    r = render(pb, {"inventory_hostname": "h1", "data_root": "/x"})
    assert r.host == "h1" and r.run is not None and r.run.volumes[1] == "/x/out/h1:/out"


def test_undefined_variable_names_file_key_path_variable_and_host() -> None:
    pb = loads(PB, "/tmp/pb.yml")
    with pytest.raises(PlaybookError) as info:
        render(pb, host("gpu07"))
    err = info.value
    assert err.file == "/tmp/pb.yml" and err.line == 6 and err.key_path == "run.volumes[0]"
    assert "undefined variable 'data_root' for host gpu07" in str(err)
    assert "define data_root for gpu07 in the inventory" in str(err)


def test_undefined_inside_a_playbook_var_is_reported_through_it() -> None:
    pb = loads("name: job\nimage: {ref: b}\nrun:\n  workdir: '{{ wd }}'\nvars:\n  wd: '/w/{{ team }}'\n", "/tmp/pb.yml")
    with pytest.raises(PlaybookError) as info:
        render(pb, host("gpu01"))
    assert info.value.key_path == "run.workdir" and info.value.line == 4
    assert "variable 'wd' (vars.wd) could not be rendered: undefined variable 'team'" in str(info.value)
    assert render(pb, host("gpu01", team="ml")).run.workdir == "/w/ml"  # type: ignore[union-attr]


def test_undefined_attribute_is_an_error_too() -> None:
    pb = loads("name: job\nimage: {ref: b}\nrun:\n  workdir: '/{{ paths.work }}'\n", "/tmp/pb.yml")
    with pytest.raises(PlaybookError) as info:
        render(pb, host("gpu01", paths={"data": "/d"}))
    assert info.value.key_path == "run.workdir" and "work" in str(info.value)


def test_defaults_and_conditionals_work_with_strict_undefined() -> None:
    pb = loads(
        "name: job\nimage: {ref: b}\nrun:\n"
        "  gpus: \"{{ 'all' if 'gpus' in group_names else '' }}\"\n"
        "  shm_size: \"{{ shm | default('8g') }}\"\n",
        "/tmp/pb.yml",
    )
    gpu = render(pb, host("gpu01"))
    cpu = render(pb, host("cpu01", groups=("cpu",), shm="1g"))
    assert gpu.run is not None and gpu.run.gpus == "all" and gpu.run.shm_size == "8g"
    assert cpu.run is not None and cpu.run.gpus is None and cpu.run.shm_size == "1g"


def test_rendered_values_are_validated_per_host() -> None:
    pb = loads("name: job\nimage: {ref: b}\nrun:\n  volumes: ['{{ data_root }}:/data']\n", "/tmp/pb.yml")
    with pytest.raises(PlaybookError) as info:
        render(pb, host("gpu02", data_root="data/sets"))
    assert info.value.key_path == "run.volumes[0]" and info.value.line == 4
    assert "relative" in str(info.value) and "(host gpu02)" in str(info.value)
    pb = loads("name: job\nimage: {ref: b}\nrun:\n  command: \"echo '{{ x }}\"\n", "/tmp/pb.yml")
    with pytest.raises(PlaybookError) as info:
        render(pb, host("gpu01", x="1"))
    assert info.value.key_path == "run.command" and "quotes" in str(info.value)


def test_env_file_is_local_and_relative_to_the_playbook(tmp_path: Path) -> None:
    (tmp_path / "secrets.env").write_text("TOKEN=x\n")
    pb = loads("name: job\nimage: {ref: b}\nrun:\n  env_file: secrets.env\n", str(tmp_path / "pb.yml"))
    r = render(pb, host("gpu01"))
    assert r.run is not None and r.run.env_file == str(tmp_path / "secrets.env")
    pb = loads("name: job\nimage: {ref: b}\nrun:\n  env_file: missing.env\n", str(tmp_path / "pb.yml"))
    with pytest.raises(PlaybookError) as info:
        render(pb, host("gpu01"))
    assert info.value.key_path == "run.env_file" and "no such file" in str(info.value)


def test_run_spec_matches_what_deploy_run_would_get() -> None:
    pb = loads(PB + "  extra: 1\n", "/tmp/pb.yml")
    r = render(pb, host("gpu01", data_root="/srv"))
    spec = run_spec(r, "job:abc123", labels={"deployer.git_rev": "abc123"})
    assert spec == RunSpec(
        image="job:abc123",
        name="job",
        gpus="all",
        volumes=("/srv/imagenet:/data:ro", "/srv/out/gpu01:/out"),
        env=(("DATASET", "imagenet"), ("EPOCHS", "3"), ("DEBUG", "true")),
        command=("python", "train.py", "--data", "/data", "--tag", "imagenet-v1 run"),
        labels=(("deployer.playbook", "job"), ("deployer.git_rev", "abc123")),
    )
    assert run_spec(r, "job:1", replace=True).replace is True


def test_sample_playbook_renders_for_testbed_like_hosts() -> None:
    pb = load(str(ROOT / "playbooks/sample.yml"))
    gpu = render(pb, host("gpu01", data_root="/tmp/x/gpu01/data"))
    cpu = render(pb, host("cpu01", groups=("cpu",), data_root="/tmp/x/cpu01/data"))
    assert gpu.run is not None and cpu.run is not None
    assert gpu.run.gpus == "all" and cpu.run.gpus is None
    assert gpu.run.volumes == ("/tmp/x/gpu01/data:/data",)
    assert gpu.run.mkdirs and gpu.run.replace
    assert dict(gpu.run.env) == {"SAMPLE_HOST": "gpu01", "SAMPLE_LINES": "3"}
    spec = run_spec(gpu, "sample:abc")
    assert spec.name == "sample" and spec.command == ("/bin/sh", "/app/sample.sh", "/data/sample.log")


def test_finetune_playbook_renders() -> None:
    r = render(load(str(ROOT / "playbooks/finetune.yml")), host("gpu01", data_root="/data"))
    assert r.run is not None
    assert r.run.volumes == ("/data/imagenette:/workspace/data:ro", "/data/checkpoints:/workspace/checkpoints")
    assert r.command[:4] == ("torchrun", "--standalone", "--nproc_per_node=gpu", "train.py")
    assert "/workspace/checkpoints/resnet50-imagenette" in r.command


def test_find_default(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError) as info:
        find_default(str(tmp_path))
    assert "none found" in str(info.value) and "deploy init" in str(info.value)
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "train.yml").write_text("name: t\n")
    assert find_default(str(tmp_path)) == str(books / "train.yml")
    (books / "eval.yaml").write_text("name: e\n")
    with pytest.raises(PlaybookError) as info:
        find_default(str(tmp_path))
    assert "2 found" in str(info.value) and "eval.yaml" in str(info.value) and "train.yml" in str(info.value)
    (books / "deploy.yml").write_text("name: d\n")
    assert find_default(str(tmp_path)) == str(books / "deploy.yml")
    (books / "default.yml").write_text("name: d\n")
    assert find_default(str(tmp_path)) == str(books / "default.yml")


def test_deploy_steps_render_all_ship_hosts_and_specs() -> None:
    from deployer.playbook.deploy import (
        group_specs,
        render_all,
        run_specs,
        ship_codec,
        ship_hosts,
        ship_level,
    )

    pb = load(str(ROOT / "playbooks/sample.yml"))
    hosts = [host("gpu01", data_root="/d/1"), host("gpu02", data_root="/d/2"),
             host("cpu01", groups=("cpu",), data_root="/d/1")]
    rendered = render_all(pb, hosts)
    assert list(rendered) == ["gpu01", "gpu02", "cpu01"]
    specs = run_specs(rendered, "sample:abc", git_rev="abc")
    assert specs["gpu02"].volumes == ("/d/2:/data",) and ("deployer.git_rev", "abc") in specs["gpu02"].labels
    groups = group_specs(specs)
    assert [names for _spec, names in groups] == [["gpu01"], ["gpu02"], ["cpu01"]]
    same = group_specs({"a": specs["gpu01"], "b": specs["gpu02"], "c": specs["gpu01"]})
    assert [names for _spec, names in same] == [["a", "c"], ["b"]]
    # The sample leaves the route to the inventory; a playbook ship section overrides it.
    assert ship_hosts(pb, hosts)[0].vars == hosts[0].vars
    pinned = loads("name: job\nimage: {ref: b}\n"
                   "ship: {via: tarball, registry: 'r:5000', level: 9, origin_pull: never, codec: gzip}\n", "/tmp/pb.yml")
    shipped = ship_hosts(pinned, [host("gpu01", deploy_via="registry")])
    assert shipped[0].via == "tarball" and shipped[0].registry == "r:5000" and shipped[0].groups == ("gpus",)
    assert shipped[0].vars["deploy_origin_pull"] == "never"
    assert (ship_level(pinned, None), ship_level(pinned, 1), ship_level(pb, None)) == (9, 1, 3)
    # the codec: --codec, else the playbook's, else None (zstd where the hosts read it)
    assert (ship_codec(pinned, None), ship_codec(pinned, "zstd"), ship_codec(pb, None), ship_codec(pb, "gzip")) == (
        "gzip", "zstd", None, "gzip")


def test_render_all_reports_every_failing_host() -> None:
    from deployer.playbook.deploy import render_all

    pb = load(str(ROOT / "playbooks/sample.yml"))
    with pytest.raises(PlaybookError) as info:
        render_all(pb, [host("gpu01", data_root="/d"), host("gpu02"), host("gpu03")])
    assert "for host gpu02" in str(info.value) and "also failing: gpu03" in str(info.value)
