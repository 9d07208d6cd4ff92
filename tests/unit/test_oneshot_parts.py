"""The pure parts of `deploy ship -p`: image choice, per-host specs, dry-run run steps, the report."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deployer import fleet
from deployer.errors import Interrupted, LocalError, PlaybookError, SpecError
from deployer.fleet import Outcome
from deployer.inventory.host import Host
from deployer.local.build import GitRevision
from deployer.oneshot import OneShotOptions, prepare
from deployer.oneshot.image import build_candidates, choose
from deployer.oneshot.report import HostReport, row
from deployer.playbook import loads
from deployer.playbook.model import BuildSpec, Playbook
from deployer.runs.spec import RunSpec
from deployer.runs.start import Started, planned_steps
from deployer.runs.start import prepare as prepare_specs
from deployer.ship.model import ShipResult
from deployer.transport.session import remote_command

PB = """\
name: job
hosts: gpus
image:
  build: {{context: ., tag: {tag}}}
ship: {{via: tarball, level: 7}}
run:
  gpus: "{{{{ 'all' if 'gpus' in group_names else '' }}}}"
  volumes: ["{{{{ data_root }}}}/{{{{ sub }}}}:/out"]
  env: {{WHO: "{{{{ inventory_hostname }}}}"}}
  command: ["/bin/sh", "/app/job.sh"]
  mkdirs: true
  replace: true
vars: {{sub: default}}
"""
REV = GitRevision(commit="a" * 40, short="a" * 12, dirty=False)


def host(name: str, groups: tuple[str, ...] = ("gpus",), **variables: object) -> Host:
    return Host(name=name, vars={"data_root": f"/srv/{name}", "deploy_staging_dir": f"/st/{name}", **variables},
                groups=groups)


def playbook(tmp_path: Path, tag: str = "job") -> Playbook:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return loads(PB.format(tag=tag), str(tmp_path / "job.yml"))


def test_build_candidates() -> None:
    spec = BuildSpec(context="/c", tag="job")
    assert build_candidates(spec, REV) == (f"job:{'a' * 12}", "job:latest")
    assert build_candidates(spec, dataclasses.replace(REV, dirty=True)) == (f"job:{'a' * 12}-dirty", "job:latest")
    assert build_candidates(spec, None) == ("job:latest",)
    assert build_candidates(BuildSpec(context="/c", tag="reg:5000/job:v3"), REV) == ("reg:5000/job:v3",)


def test_choose_image(tmp_path: Path) -> None:
    pb = playbook(tmp_path)
    assert choose(pb, image_ref="other:v1", no_build=False).ref == "other:v1"
    built = choose(pb, image_ref=None, no_build=False)
    assert built.ref is None and built.build is not None and built.build.tag == "job"
    # --no-build outside git: only :latest can be the last build
    last = choose(pb, image_ref=None, no_build=True, exists=lambda ref: ref == "job:latest")
    assert last.ref == "job:latest" and last.source == "last build"
    with pytest.raises(LocalError, match=r"--no-build: none of job:latest is in the local Docker"):
        choose(pb, image_ref=None, no_build=True, exists=lambda ref: False)
    prebuilt = loads("name: pre\nimage: {ref: 'trainer:v3'}\n", str(tmp_path / "pre.yml"))
    assert choose(prebuilt, image_ref=None, no_build=True).ref == "trainer:v3"


def test_prepare_renders_every_host_and_applies_ship_settings(tmp_path: Path) -> None:
    hosts = [host("gpu01", sub="alpha"), host("cpu01", groups=("cpu",))]
    prepared = prepare(playbook(tmp_path), hosts, OneShotOptions())
    assert [h.vars["deploy_via"] for h in prepared.ship_hosts] == ["tarball", "tarball"]
    assert prepared.ship_options("abc").level == 7 and prepared.ship_options("abc").via is None
    assert prepared.ship_options("abc").record == (("playbook", "job"), ("git_rev", "abc"))
    cli = prepare(playbook(tmp_path), hosts, OneShotOptions(via="registry", level=2))
    assert cli.ship_options(None).via == "registry" and cli.ship_options(None).level == 2
    assert prepared.ship_options(None).codec is None and cli.ship_options(None).codec is None
    # the playbook's ship.codec (an image every Docker pulls), unless --codec says otherwise
    gzip = loads(PB.format(tag="job").replace("level: 7}", "level: 7, codec: gzip}"), str(tmp_path / "gz.yml"))
    assert prepare(gzip, hosts, OneShotOptions()).ship_options(None).codec == "gzip"
    assert prepare(gzip, hosts, OneShotOptions(codec="zstd")).ship_options(None).codec == "zstd"
    specs = prepared.specs("job:rev", "rev")
    assert specs["gpu01"].volumes == ("/srv/gpu01/alpha:/out",) and specs["gpu01"].gpus == "all"
    assert specs["cpu01"].volumes == ("/srv/cpu01/default:/out",) and specs["cpu01"].gpus is None
    assert dict(specs["gpu01"].labels) == {"deployer.playbook": "job", "deployer.git_rev": "rev"}


def test_prepare_fails_before_any_work(tmp_path: Path) -> None:
    pb = playbook(tmp_path)
    with pytest.raises(PlaybookError, match=r"run.volumes\[0\]: undefined variable 'data_root' for host a") as exc:
        prepare(pb, [Host("a", {}, ("gpus",)), Host("b", {}, ())], OneShotOptions())
    assert exc.value.hint and "also failing: b" in exc.value.hint
    with pytest.raises(SpecError, match="--no-build and --image"):
        prepare(pb, [host("gpu01")], OneShotOptions(image="x:1", build=False))
    with_env_file = loads(  # the playbook's folder holds the Dockerfile written by playbook()
PB.format(tag="job").replace("mkdirs: true", "mkdirs: true\n  env_file: job.env"),
                          str(tmp_path / "job.yml"))
    (tmp_path / "job.env").write_text("A=1\nbad key=2\n")
    with pytest.raises(SpecError, match="contains whitespace"):
        prepare(with_env_file, [host("gpu01")], OneShotOptions())


def test_start_prepare_takes_one_spec_per_host() -> None:
    a, b = host("a"), host("b")
    spec_a = RunSpec(image="x:1", name="job", volumes=("/srv/a:/out",))
    spec_b = dataclasses.replace(spec_a, volumes=("/srv/b:/out",), gpus="all")
    prepared = prepare_specs([a, b], {"a": spec_a, "b": spec_b})
    assert prepared["a"].volumes[0].source == "/srv/a" and prepared["a"].gpus is None
    assert prepared["b"].volumes[0].source == "/srv/b" and prepared["b"].gpus is not None
    shared = prepare_specs([a, b], RunSpec(image="x:1"))  # one spec: one default name for every host
    assert shared["a"].name == shared["b"].name and shared["a"].name.startswith("x-")
    with pytest.raises(SpecError, match="no run spec for b"):
        prepare_specs([a, b], {"a": spec_a})
    with pytest.raises(SpecError, match="relative"):
        prepare_specs([a, b], {"a": spec_a, "b": dataclasses.replace(spec_b, volumes=("data:/out", "rel/x:/y"))})


def test_run_steps_are_the_exact_start_commands() -> None:
    h = host("gpu01")
    spec = RunSpec(image="job:abc", name="job", gpus="all", volumes=("/srv/gpu01/a:/out",), env=(("WHO", "secret-value"),),
                   command=("/bin/sh", "/app/job.sh"), labels=(("deployer.playbook", "job"),), mkdirs=True,
                   replace=True)
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)
    steps = planned_steps(h, spec, "sha256:" + "b" * 64, now=now)
    lines = [(remote_command(step.argv), step.note) for step in steps]
    env = "/st/gpu01/run-env.job.<random>"
    assert lines[0] == ("docker image inspect -- job:abc", "preflight (read only)")
    assert lines[1] == ("docker rm --force -- job", "only if a deployer container job exists")
    assert lines[2] == ("mkdir -p -- /srv/gpu01/a", "only the volume sources that are missing")
    assert lines[3][1] == "env values (WHO) on stdin" and env in lines[3][0]
    run, when = lines[4]
    assert when is None and run.startswith("docker run --detach --name job --label deployer.managed=true ")
    assert "--label deployer.started_at=2026-11-29T12:00:00Z" in run and f"deployer.image_id=sha256:{'b' * 64}" in run
    assert run.endswith(f"--gpus all --volume /srv/gpu01/a:/out --env-file '{env}' job:abc /bin/sh /app/job.sh")
    assert "secret-value" not in run  # env values never on the command line
    assert lines[5] == ("docker rm --force -- job", "only if docker run fails")
    assert lines[6] == (f"rm -f -- '{env}'", None)
    assert len(lines) == 7 and all(step.label for step in steps)
    assert "secret-value" not in repr(steps)  # the env file's contents travel as stdin, never shown


def test_report_merges_ship_and_run() -> None:
    ship = ShipResult(host="gpu01", via="tarball", route="tarball", image_id="sha256:" + "c" * 64, verified=True,
                      layers_total=3, layers_sent=1, bytes_sent=2048, seconds=1.23456)
    started = Started("gpu01", "job", "d" * 64, ship.image_id or "", "docker run ...", "all")
    rep = HostReport(host="gpu01", ship=ship, image="job:abc", playbook="job", git_rev="abc", started=started,
                     container="job", state="started")
    rec = rep.to_json()
    assert rec["ok"] and rec["error"] is None and rec["shipped"] and rec["state"] == "started"
    assert rec["layers_sent"] == 1 and rec["bytes_sent"] == 2048 and rec["seconds"] == 1.235
    assert rec["container_id"] == "d" * 64 and rec["git_rev"] == "abc" and rec["route"] == "tarball"
    assert row(rep) == ["gpu01", "ok", "tarball", "1/3", "2.0 KB", "c" * 12 + " verified", "job", "started"]
    failed = HostReport(host="gpu02", ship=ShipResult(host="gpu02"), image="job:abc", playbook="job",
                        ship_error=SpecError("boom"), container="job", state="skipped")
    rec = failed.to_json()
    assert not rec["ok"] and rec["error"] == "boom" and not rec["shipped"] and rec["container_id"] is None
    assert row(failed)[1:3] == ["FAILED", "-"]


@pytest.mark.parametrize("during", ["build", "ship", "start"])
def test_a_stopped_deploy_carries_each_hosts_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    during: str) -> None:
    """Ctrl-C (SIGTERM, SIGHUP) while building, shipping or starting: the stop carries a report per
    host, for --json."""
    import deployer.ship
    from deployer.oneshot import pipeline

    hosts = [host("gpu01"), host("gpu02")]
    prepared = prepare(playbook(tmp_path), hosts, OneShotOptions())
    image_id = "sha256:" + "c" * 64
    done = ShipResult(host="gpu02", via="tarball", image_id=image_id, verified=True, bytes_sent=10)
    half = ShipResult(host="gpu01", via="tarball", image_id=image_id, bytes_sent=5)
    run = Started("gpu01", "job", "d" * 64, image_id, "docker run ...", "all")

    def stop(outcomes: list[Outcome[object]]) -> KeyboardInterrupt:
        exc = KeyboardInterrupt()
        fleet.carry(exc, outcomes)
        return exc

    def ship_image(ship_hosts: list[Host], *args: object, **kwargs: object) -> list[Outcome[ShipResult]]:
        a, b = ship_hosts
        if during == "ship":
            raise stop([Outcome(a, half, Interrupted("gpu01")), Outcome(b, done)])
        return [Outcome(a, dataclasses.replace(half, verified=True)), Outcome(b, done)]

    def start(*args: object) -> dict[str, Outcome[Started]]:
        a, b = prepared.hosts
        raise stop([Outcome(a, run), Outcome(b, error=Interrupted("gpu02"))])

    def image(*args: object) -> tuple[str, str]:
        if during == "build":
            raise KeyboardInterrupt
        return "job:abc", "abc"

    monkeypatch.setattr(pipeline, "_image", image)
    monkeypatch.setattr(deployer.ship, "ship_image", ship_image)
    monkeypatch.setattr(pipeline, "_start", start)
    with pytest.raises(KeyboardInterrupt) as info:
        pipeline.deploy(prepared, say=lambda m: None, on_line=lambda m: None, client=object())
    reports = fleet.carried(info.value)
    assert isinstance(reports, list) and [r.host for r in reports] == ["gpu01", "gpu02"]
    one, two = (r.to_json() for r in reports)
    if during == "build":  # no host was touched
        for rec in (one, two):
            assert (rec["ok"], rec["shipped"], rec["error"], rec["state"], rec["bytes_sent"]) == (
                False, False, "not started: interrupted (Ctrl-C)", "skipped", 0), rec
            assert rec["image"] == "job"  # the build's name: its tag was not made yet
    elif during == "ship":
        assert (one["ok"], one["error"], one["state"], one["bytes_sent"]) == (False, "interrupted (Ctrl-C)", "skipped", 5)
        assert (two["ok"], two["shipped"], two["state"]) == (True, True, "not run")
    else:
        assert (one["ok"], one["state"], one["container_id"]) == (True, "started", "d" * 64)
        assert (two["ok"], two["shipped"], two["error"], two["state"]) == (False, True, "interrupted (Ctrl-C)",
                                                                            "failed")


@pytest.fixture()
def asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addresses an SSH connect was tried to (none answers), with an empty workstation cache."""
    from deployer import transport

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tried: list[str] = []

    def connect(host: Host, **kw: object) -> object:
        tried.append(host.address)
        raise OSError("no host here")

    monkeypatch.setattr(transport, "connect", connect)
    return tried


def test_a_hosts_architecture_comes_from_the_last_ships_probe_without_a_connection(asked: list[str]) -> None:
    """`ship -p` builds for the hosts' architecture: known from `deploy inventory check`'s facts, or
    from the probe the last ship there remembered (a CPU does not change), an SSH login is spared."""
    from deployer import layercache
    from deployer.oneshot import platform
    from deployer.ship.recall import probe_key

    shipped, fresh = Host("gpu01", {"ansible_host": "10.0.0.1"}), Host("gpu02", {"ansible_host": "10.0.0.2"})
    layercache.remember_probe(shipped, probe_key(shipped), "@@deployer arch\naarch64\n\n@@rc 0\n", now=0.0)
    assert platform.host_arches([shipped, fresh]) == {"gpu01": "aarch64", "gpu02": None}
    assert asked == ["10.0.0.2"]


def test_a_hosts_architecture_is_never_another_machines_of_the_same_name(asked: list[str]) -> None:
    """`deploy inventory check`'s facts are the checked machine's: another inventory's gpu01 (another
    address) is asked, not given the checked one's CPU."""
    from deployer import factcache
    from deployer.oneshot import platform

    checked, other = Host("gpu01", {"ansible_host": "10.0.0.1"}), Host("gpu01", {"ansible_host": "10.0.9.1"})
    factcache.save(checked, {"ok": True, "arch": "aarch64"})
    assert platform.host_arches([checked]) == {"gpu01": "aarch64"} and asked == []
    assert platform.host_arches([other]) == {"gpu01": None} and asked == ["10.0.9.1"]
