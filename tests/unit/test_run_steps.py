"""The start of a container is one list of steps: the executor runs exactly what launch_steps builds."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deployer.commands.run import ContainerStatus
from deployer.errors import CommandError
from deployer.inventory.host import Host
from deployer.runs import start as starting
from deployer.runs.preflight import Ready
from deployer.runs.spec import RunSpec
from deployer.runs.start import labels_for, prepare
from deployer.runs.steps import launch_steps
from deployer.transport.fake import FakeSession

HOST = Host(name="gpu01", vars={"deploy_staging_dir": "/st"})
SPEC = RunSpec("job:1", name="job", volumes=("/srv/a:/out", "/srv/b:/in:ro"), env=(("TOKEN", "s3cret"),),
               command=("python", "train.py"), mkdirs=True, replace=True)
NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)
OLD = ContainerStatus(id="c" * 64, name="job", image="job:0", image_id="", state="exited", exit_code=0,
                      oom_killed=False, started_at=None, finished_at=None,
                      labels=(("deployer.managed", "true"),))


def _launch(fake: FakeSession, monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[tuple[str, ...]]]:
    """Run the executor on a fake session; (what it returned or raised, the launch steps it should run)."""
    monkeypatch.setattr(starting.secrets, "token_hex", lambda _n: "t0k3n")
    p = prepare([HOST], SPEC)[HOST.name]
    ready = Ready(HOST, "sha256:" + "a" * 64, existing=OLD, missing_dirs=("/srv/b",))
    labels = labels_for(SPEC, name=p.name, ready=ready, now=NOW)
    steps = launch_steps(HOST, SPEC, name=p.name, volumes=p.volumes, env=p.env, labels=labels, token="t0k3n",
                         replacing=True, missing_dirs=("/srv/b",))
    try:
        got: object = starting._launch(fake, ready, p, labels=labels, say=lambda _h, _m: None)
    except CommandError as exc:
        got = exc
    return got, [s.argv for s in steps]


def _ran(fake: FakeSession) -> list[tuple[str, ...]]:
    return [argv for argv in fake.argvs() if "/st" not in argv[:5]]  # without the history appends


def test_the_executor_runs_the_launch_steps_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSession("gpu01", strict=False).on(["docker", "run"], prefix=True, stdout="f" * 64 + "\n")
    started, steps = _launch(fake, monkeypatch)
    before, run, _on_failure, cleanup = steps[:3], steps[3], steps[4], steps[5]
    assert _ran(fake) == [*before, run, cleanup]
    assert [c.sent for c in fake.calls if c.argv == before[2]] == [b"TOKEN=s3cret\n"]  # on stdin only
    assert before[0][-3:] == ("--force", "--", "job") and before[1] == ("mkdir", "-p", "--", "/srv/b")
    assert getattr(started, "container_id", None) == "f" * 64


def test_a_failed_docker_run_clears_the_container_then_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSession("gpu01", strict=False).on(["docker", "run"], prefix=True, exited=125, stderr="bad mount")
    err, steps = _launch(fake, monkeypatch)
    assert isinstance(err, CommandError) and "docker could not start job" in str(err)
    assert _ran(fake) == steps  # before, run, on_failure, cleanup: the list a dry run prints


def test_a_failed_step_is_named_by_its_label(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSession("gpu01", strict=False).on(["mkdir"], prefix=True, exited=1, stderr="read-only file system")
    err, steps = _launch(fake, monkeypatch)
    assert isinstance(err, CommandError) and "cannot create volume sources" in str(err)
    assert _ran(fake) == [steps[0], steps[1], steps[5]]  # nothing started; the (unwritten) env file is cleared


def test_before_preflight_the_conditional_steps_carry_their_condition() -> None:
    p = prepare([HOST], SPEC)[HOST.name]
    steps = list(launch_steps(HOST, SPEC, name=p.name, volumes=p.volumes, env=p.env, labels=[], token="x"))
    notes = [s.note for s in steps]
    assert notes[:2] == ["only if a deployer container job exists", "only the volume sources that are missing"]
    assert steps[1].argv == ("mkdir", "-p", "--", "/srv/a", "/srv/b")
    plain = RunSpec("job:1", name="job")
    assert [s.label for s in launch_steps(HOST, plain, name="job", volumes=(), env=(), labels=[], token="x")] == [
        "docker run job", "remove the failed container job"]
