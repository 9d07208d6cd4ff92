"""BuildKit builds, pure parts: the exact `docker buildx build` argv, reading its plain progress, the build
view, the BuildKit keys of image.build, and the platform chosen from the hosts' architectures."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from deployer.cli.buildview import BuildView
from deployer.errors import LocalError, PlaybookError, SpecError
from deployer.local.buildlog import BuildLog
from deployer.local.buildx import build_argv, preflight, secret_flag
from deployer.oneshot.platform import choose, decide, platform_of
from deployer.playbook import loads
from deployer.playbook.model import BuildSecret, BuildSpec

SUCCESS = """\
#0 building with "default" instance using docker driver

#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 248B done
#1 DONE 0.0s

#4 [stage-0 1/4] FROM docker.io/deployer-testbed/busybox:latest
#4 CACHED

#5 [internal] preparing inline document
#5 DONE 0.0s

#6 [stage-0 2/4] COPY <<EOT /hello.txt
#6 DONE 0.0s

#7 [stage-0 3/4] RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt
#7 0.135 Collecting torch
#8 [builder 2/3] RUN make
#8 0.201 cc -o app app.c
#7 1.5 Installing collected packages
#7 DONE 2.4s
#8 [builder 2/3] RUN make
#8 DONE 0.3s

#9 exporting to image
#9 exporting layers 0.0s done
#9 writing image sha256:364d19ee8856174b34884f634e79a75558ca1d0ef3efb9ee3e0debbba85ab78c done
#9 naming to docker.io/library/probe:1 done
#9 DONE 0.0s
"""

FAILURE = """\
#0 building with "default" instance using docker driver

#4 [1/2] FROM docker.io/deployer-testbed/busybox:latest
#4 CACHED

#5 [2/2] RUN echo line-one && echo about-to-fail && exit 3
#5 0.251 line-one
#5 0.253 about-to-fail
#6 [other 1/1] RUN sleep 10
#6 CANCELED
#5 ERROR: process "/bin/sh -c echo line-one && echo about-to-fail && exit 3" did not complete successfully: exit code: 3
------
 > [2/2] RUN echo line-one && echo about-to-fail && exit 3:
0.251 line-one
0.253 about-to-fail
------
Dockerfile:2
--------------------
   1 |     FROM deployer-testbed/busybox:latest
   2 | >>> RUN echo line-one && echo about-to-fail && exit 3
   3 |
--------------------
ERROR: failed to build: failed to solve: process "/bin/sh -c echo line-one && echo about-to-fail && exit 3" \
did not complete successfully: exit code: 3
"""

PARSE_ERROR = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
Dockerfile:2
--------------------
   2 | >>> RUNN x
--------------------
ERROR: failed to build: failed to solve: dockerfile parse error on line 2: unknown instruction: RUNN (did you mean RUN?)
"""


def read(text: str) -> BuildLog:
    log = BuildLog()
    for line in text.splitlines():
        log.feed(line)
    return log


def test_buildx_argv_is_exact() -> None:
    spec = BuildSpec(context="/p/app", dockerfile="docker/Dockerfile", args=(("BASE", "img:1"),), target="train",
                     tag="job", platform=("linux/arm64",),
                     secrets=(BuildSecret("hf_token", "env", "HF_TOKEN"), BuildSecret("netrc", "file", "/home/u/.netrc")),
                     ssh=True, cache_from=("type=registry,ref=reg:5000/job:cache",),
                     cache_to=("type=registry,ref=reg:5000/job:cache,mode=max",))
    argv = build_argv(spec, tags=("job:abc", "job:latest"), labels={"deployer.git_rev": "abc"},
                      platforms=("linux/arm64",))
    assert argv == (
        "docker", "buildx", "build", "--progress=plain", "--load", "--provenance=false",
        "--file", "/p/app/docker/Dockerfile",
        "--build-arg", "BASE=img:1", "--target", "train", "--label", "deployer.git_rev=abc",
        "--tag", "job:abc", "--tag", "job:latest", "--platform", "linux/arm64",
        "--secret", "id=hf_token,env=HF_TOKEN", "--secret", "id=netrc,src=/home/u/.netrc",
        "--ssh", "default",
        "--cache-from", "type=registry,ref=reg:5000/job:cache",
        "--cache-to", "type=registry,ref=reg:5000/job:cache,mode=max",
        "/p/app",
    )
    plain = build_argv(BuildSpec(context="/c", tag="job"), tags=("job:latest",), labels={}, platforms=())
    assert plain == ("docker", "buildx", "build", "--progress=plain", "--load", "--provenance=false",
                     "--file", "/c/Dockerfile", "--tag", "job:latest", "/c")
    assert secret_flag(BuildSecret("a", "file", "/s")) == "id=a,src=/s"
    # where buildx writes the build's provenance: the base images it used (deployer.local.declared)
    meta = build_argv(BuildSpec(context="/c", tag="job"), tags=("job:latest",), labels={}, platforms=(),
                      metadata_file="/tmp/m/metadata.json")
    assert meta == ("docker", "buildx", "build", "--progress=plain", "--load", "--provenance=false",
                    "--metadata-file", "/tmp/m/metadata.json", "--file", "/c/Dockerfile", "--tag", "job:latest", "/c")


def test_preflight_refuses_missing_secrets_and_agent(tmp_path: Path) -> None:
    token = tmp_path / "token"
    spec = BuildSpec(context="/c", secrets=(BuildSecret("tok", "file", str(token)),))
    with pytest.raises(LocalError, match="build secret tok: no such file"):
        preflight(spec, {})
    token.write_text("s3cr3t")
    preflight(spec, {})
    env_spec = BuildSpec(context="/c", secrets=(BuildSecret("hf", "env", "HF_TOKEN"),))
    with pytest.raises(LocalError, match="HF_TOKEN is not set") as caught:
        preflight(env_spec, {})
    assert "s3cr3t" not in str(caught.value)
    preflight(env_spec, {"HF_TOKEN": "x"})
    with pytest.raises(LocalError, match="SSH_AUTH_SOCK is not set"):
        preflight(BuildSpec(context="/c", ssh=True), {})
    preflight(BuildSpec(context="/c", ssh=True), {"SSH_AUTH_SOCK": "/run/agent"})


def test_plain_progress_gives_steps_cached_and_timed() -> None:
    log = read(SUCCESS)
    user = [log.steps[s] for s in log.order if log.steps[s].user]
    assert [s.label for s in user] == [
        "[1/4] FROM docker.io/deployer-testbed/busybox:latest", "[2/4] COPY <<EOT /hello.txt",
        "[3/4] RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt",
        "[builder 2/3] RUN make"]
    assert [(s.cached, s.seconds) for s in user] == [(True, None), (False, 0.0), (False, 2.4), (False, 0.3)]
    assert list(user[2].tail) == ["Collecting torch", "Installing collected packages"]  # interleaved output
    assert list(user[3].tail) == ["cc -o app app.c"]
    assert log.summary() == (4, 1) and log.failed is None


def test_failure_names_the_step_its_error_and_output() -> None:
    log = read(FAILURE)
    assert log.failure_text() == (
        'image build failed at [2/2] RUN echo line-one && echo about-to-fail && exit 3 (Dockerfile:2): '
        'process "/bin/sh -c echo line-one && echo about-to-fail && exit 3" did not complete successfully: '
        "exit code: 3\n  output (last lines):\n    line-one\n    about-to-fail")
    parse = read(PARSE_ERROR)
    assert parse.failure_text() == ("image build failed at Dockerfile:2: failed to build: failed to solve: dockerfile "
                                    "parse error on line 2: unknown instruction: RUNN (did you mean RUN?)")


def test_an_error_without_a_step_keeps_buildxs_explanation() -> None:
    log = read("#0 building with \"default\" instance using docker driver\n\n"
               "ERROR: failed to build: Cache export is not supported for the docker driver.\n"
               "Switch to a different driver, or turn on the containerd image store, and try again.\n"
               "Learn more at https://docs.docker.com/go/build-cache-backends/\n")
    assert log.failure_text() == (
        "image build failed: failed to build: Cache export is not supported for the docker driver. Switch to a "
        "different driver, or turn on the containerd image store, and try again. Learn more at "
        "https://docs.docker.com/go/build-cache-backends/")


def test_legacy_builder_lines_are_steps_too() -> None:
    log = read("Step 1/3 : FROM busybox\n ---> abc\nStep 2/3 : RUN echo hi\n ---> Running in 1f\nhi\n"
               "Removing intermediate container 1f\nStep 3/3 : CMD x\nSuccessfully built 0123456789ab\n")
    assert [log.steps[s].label for s in log.order] == ["[1/3] FROM busybox", "[2/3] RUN echo hi", "[3/3] CMD x"]
    assert all(log.steps[s].done for s in log.order) and log.image_id == "0123456789ab"
    assert list(log.steps[log.order[1]].tail) == ["hi"]


def view_of(text: str, **kw: Any) -> str:
    out = io.StringIO()
    view = BuildView(stream=out, **kw)
    for line in text.splitlines():
        view(line)
    view.close()
    return out.getvalue()


def test_view_piped_is_one_line_per_dockerfile_step() -> None:
    assert view_of(SUCCESS, live=False) == (
        "  [1/4] FROM docker.io/deployer-testbed/busybox:latest  cached\n"
        "  [2/4] COPY <<EOT /hello.txt  0.0s\n"
        "  [3/4] RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt  2.4s\n"
        "  [builder 2/3] RUN make  0.3s\n")
    assert view_of(SUCCESS, verbose=True) == SUCCESS  # -v: the builder's whole log


def test_view_on_a_terminal_shows_the_running_step_then_clears_it() -> None:
    out = view_of(SUCCESS, live=True, width=200)
    assert "\r\x1b[2K  [3/4] RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt  Collecting torch" in out
    assert out.endswith("naming to docker.io/library/probe:1 done\r\x1b[2K")  # the live line is gone at the end
    printed = [line.rsplit("\r\x1b[2K", 1)[-1] for line in out.split("\n")[:-1]]  # what stays on screen
    assert printed == view_of(SUCCESS, live=False).splitlines()


def build_playbook(tmp_path: Path, extra: str, ship: str = "") -> BuildSpec:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    pb = loads(f"name: job\nimage:\n  build:\n    context: .\n{extra}{ship}", str(tmp_path / "job.yml"))
    assert pb.image.build is not None
    return pb.image.build


def test_playbook_buildkit_keys(tmp_path: Path) -> None:
    spec = build_playbook(tmp_path, "    platform: linux/arm64\n    secrets:\n      hf_token: {env: HF_TOKEN}\n"
                          "      netrc: {file: keys/netrc}\n    ssh: true\n    cache_from: job:cache\n"
                          "    cache_to: [other.example:5000/job:cache, 'type=inline']\n",
                          "ship: {registry: 'reg.example:5000'}\n")
    assert spec.platform == ("linux/arm64",) and spec.ssh is True
    assert spec.secrets == (BuildSecret("hf_token", "env", "HF_TOKEN"),
                            BuildSecret("netrc", "file", str(tmp_path / "keys/netrc")))
    assert spec.cache_from == ("type=registry,ref=reg.example:5000/job:cache",)
    assert spec.cache_to == ("type=registry,ref=other.example:5000/job:cache,mode=max", "type=inline")
    multi = build_playbook(tmp_path, "    platform: [linux/amd64, 'linux/arm64,linux/amd64']\n")
    assert multi.platform == ("linux/amd64", "linux/arm64")
    plain = build_playbook(tmp_path, "")
    assert (plain.platform, plain.secrets, plain.ssh, plain.cache_from, plain.cache_to) == ((), (), False, (), ())


@pytest.mark.parametrize(("extra", "path", "message"), [
    ("    platform: amd64\n", "image.build.platform", "not a platform: write os/arch"),
    ("    secrets: {tok: {file: a, env: B}}\n", "image.build.secrets.tok", "exactly one of 'file'"),
    ("    secrets: {tok: {value: s3cr3t}}\n", "image.build.secrets.tok.value", "unknown key 'value'"),
    ("    secrets: {tok: {env: 'not a name'}}\n", "image.build.secrets.tok.env", "not an environment variable"),
    ("    secrets: {'bad id': {env: X}}\n", "image.build.secrets.bad id", "invalid secret id"),
    ("    ssh: agent\n", "image.build.ssh", "must be true or false"),
    ("    cache_to: job:cache\n", "image.build.cache_to", "names no registry, and the playbook has no ship.registry"),
    ("    cache_form: x\n", "image.build.cache_form", "did you mean 'cache_from'?"),
])
def test_playbook_buildkit_keys_refused(tmp_path: Path, extra: str, path: str, message: str) -> None:
    with pytest.raises(PlaybookError) as caught:
        build_playbook(tmp_path, extra)
    assert caught.value.key_path == path and message in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_platform_of_uname() -> None:
    assert platform_of("x86_64") == "linux/amd64" and platform_of("aarch64") == "linux/arm64"
    assert platform_of("armv7l") == "linux/arm/v7" and platform_of("") is None and platform_of("vax") is None


def test_hosts_of_one_architecture_set_the_platform() -> None:
    choice = choose((), {"gpu01": "x86_64", "gpu02": "x86_64"}, "x86_64")
    assert choice.platforms == ("linux/amd64",) and choice.warnings == ()
    assert choice.reason == "for linux/amd64, the architecture of gpu01, gpu02"


def test_hosts_of_two_architectures_are_refused_without_platform() -> None:
    with pytest.raises(SpecError) as caught:
        choose((), {"gpu01": "x86_64", "gh200": "aarch64", "gpu02": "x86_64"}, "x86_64")
    assert str(caught.value).startswith(
        "the selected hosts have different architectures (linux/amd64: gpu01, gpu02; linux/arm64: gh200); one "
        "image cannot run on all of them, and image.build.platform does not ask for a multi-platform build")
    assert caught.value.hint is not None and "image.build.platform: [linux/amd64, linux/arm64]" in caught.value.hint
    multi = choose(("linux/amd64", "linux/arm64"), {"gpu01": "x86_64", "gh200": "aarch64"}, "x86_64")
    assert multi.platforms == ("linux/amd64", "linux/arm64")
    assert len(multi.warnings) == 1 and "emulation" in multi.warnings[0] and "linux/arm64" in multi.warnings[0]


def test_emulation_and_unknown_hosts_are_warned() -> None:
    arm = choose((), {"gh200": "aarch64", "lost": None}, "x86_64")
    assert arm.platforms == ("linux/arm64",)
    assert arm.warnings[0] == "architecture unknown for lost: building linux/arm64 for them too"
    assert arm.warnings[1].startswith("building for linux/arm64 on a linux/amd64 workstation: RUN steps run under "
                                      "emulation")
    nothing = choose((), {"lost": None}, "x86_64")
    assert nothing.platforms == () and "workstation's platform" in nothing.reason
    pinned = choose(("linux/amd64",), {"gh200": "aarch64"}, "x86_64")
    assert pinned.platforms == ("linux/amd64",)
    assert pinned.warnings == ("gh200: linux/arm64, which image.build.platform does not include: the image will "
                               "not start there",)


def test_decide_asks_the_hosts_only_without_platform() -> None:
    from deployer.inventory.host import Host

    asked: list[list[str]] = []

    def arches(hosts: Any) -> dict[str, str | None]:
        asked.append([h.name for h in hosts])
        return {h.name: "aarch64" for h in hosts}

    hosts = [Host(name="gh01", vars={}), Host(name="gh02", vars={})]
    assert decide((), hosts, "aarch64", arches).platforms == ("linux/arm64",) and asked == [["gh01", "gh02"]]
    assert decide(("linux/amd64",), hosts, "aarch64", arches).platforms == ("linux/amd64",) and len(asked) == 1
    assert decide((), [], "aarch64", arches).platforms == () and len(asked) == 1


def test_ship_playbook_refuses_hosts_of_two_architectures_before_building(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`deploy ship -p` on hosts whose facts say x86_64 and aarch64 (the testbed has x86_64 hosts only)."""
    from deployer.inventory.host import Host
    from deployer.local import build as local_build
    from deployer.local.fake import FakeClient
    from deployer.oneshot import OneShotOptions, deploy, prepare

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    pb = loads("name: job\nimage:\n  build: .\n", str(tmp_path / "job.yml"))
    hosts = [Host(name="gpu01", vars={}), Host(name="gh200", vars={})]
    prepared = prepare(pb, hosts, OneShotOptions())
    built: list[Any] = []
    monkeypatch.setattr(local_build, "build", lambda *a, **kw: built.append(a))
    said: list[str] = []
    client = FakeClient(info_json={"Architecture": "x86_64"})
    with pytest.raises(SpecError, match=r"different architectures \(linux/amd64: gpu01; linux/arm64: gh200\)"):
        deploy(prepared, say=said.append, on_line=said.append, client=client,
               arches=lambda hs: {"gpu01": "x86_64", "gh200": "aarch64"})
    assert built == [] and not any(s.startswith("building") for s in said)


def test_playbook_check_shows_the_buildkit_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from deployer.cli import main

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "job.yml").write_text("name: job\nimage:\n  build:\n    context: .\n    platform: linux/arm64\n"
                                      "    secrets: {hf: {env: HF_TOKEN}}\n    ssh: true\n")
    assert main(["playbook", "check", "-p", str(tmp_path / "job.yml"), "--no-hosts", "--json"]) == 0
    build = json.loads(capsys.readouterr().out)["image"]["build"]
    assert build["platform"] == ["linux/arm64"] and build["secrets"] == {"hf": {"env": "HF_TOKEN"}}
    assert build["ssh"] is True and build["cache_from"] == [] and build["cache_to"] == []


def test_dry_run_says_the_platform_and_refuses_two_architectures(tmp_path: Path) -> None:
    from deployer.inventory.host import Host
    from deployer.local.fake import FakeClient
    from deployer.oneshot import OneShotOptions, prepare, preview

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    pb = loads("name: job\nimage:\n  build: .\n", str(tmp_path / "job.yml"))
    prepared = prepare(pb, [Host(name="gpu01", vars={}), Host(name="gh200", vars={})], OneShotOptions())
    client = FakeClient(info_json={"Architecture": "x86_64"})
    with pytest.raises(SpecError, match="different architectures"):
        preview(prepared, client=client, arches=lambda hs: {"gpu01": "x86_64", "gh200": "aarch64"})
    view = preview(prepared, client=client, arches=lambda hs: {"gpu01": "aarch64", "gh200": "aarch64"})
    assert view.notes[0] == "would build for linux/arm64, the architecture of gpu01, gh200"
    assert "emulation" in view.notes[1] and view.plans == ()  # no earlier build to plan with
