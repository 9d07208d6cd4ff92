"""Pure parts of observing runs: log resume without repeats, status filtering/JSON, rows, history merge."""
from __future__ import annotations

from datetime import datetime, timezone

from deployer.commands.facts import Gpu
from deployer.commands.run import ContainerStatus
from deployer.inventory.host import Host
from deployer.runs.gpuuse import Busy, gpu_use
from deployer.runs.journal import merge
from deployer.runs.logs import LogCursor, timestamp_ns
from deployer.runs.preflight import Ready
from deployer.runs.render import ago, exit_text, gpu_rows, history_rows, status_rows
from deployer.runs.spec import RunSpec
from deployer.runs.start import labels_for
from deployer.runs.status import HostStatus, select, to_json

T1 = b"2026-11-29T15:30:12.000000001Z "
T2 = b"2026-11-29T15:30:12.000000002Z "
T3 = b"2026-11-29T15:30:13.5Z "


def test_timestamp_ns() -> None:
    ns, end = timestamp_ns(T1 + b"hello\n") or (0, 0)
    assert ns % 1_000_000_000 == 1 and end == len(T1)
    assert timestamp_ns(b"2026-11-29T17:30:12.000000001+02:00 x")[0] == ns  # type: ignore[index]
    assert timestamp_ns(b"no timestamp\n") is None


def test_cursor_strips_timestamps_and_joins_chunks() -> None:
    c = LogCursor(keep_timestamps=False)
    assert c.feed(T1 + b"a\n" + T2[:10]) == [b"a\n"]
    assert c.feed(T2[10:] + b"b\n") == [b"b\n"]
    assert c.feed(T3 + b"tail") == []
    assert c.flush() == [b"tail"]


def test_cursor_keeps_timestamps_when_asked() -> None:
    c = LogCursor(keep_timestamps=True)
    assert c.feed(T1 + b"a\n") == [T1 + b"a\n"]


def test_resume_drops_what_was_printed_even_at_the_same_instant() -> None:
    c = LogCursor(keep_timestamps=False)
    # two lines share T2; the stream drops halfway through a third line
    assert c.feed(T1 + b"one\n" + T2 + b"two\n" + T2 + b"two-b\n" + T3 + b"thr") == [b"one\n", b"two\n", b"two-b\n"]
    since = c.resume()
    assert since == T2.decode().strip()
    # docker --since is inclusive: it sends everything from T2 again
    again = c.feed(T2 + b"two\n" + T2 + b"two-b\n" + T3 + b"three\n" + T3 + b"four\n")
    assert again == [b"three\n", b"four\n"]
    assert c.resume() == T3.decode().strip()
    assert c.feed(T3 + b"three\n" + T3 + b"four\n" + T3 + b"five\n") == [b"five\n"]


def test_live_stream_keeps_lines_out_of_timestamp_order() -> None:
    # docker copies stdout and stderr separately: a stderr line can follow a later stdout line
    c = LogCursor(keep_timestamps=False)
    assert c.feed(T2 + b"refused\n" + T1 + b"touch: Read-only file system\n") == [
        b"refused\n", b"touch: Read-only file system\n"]
    assert c.resume() == T2.decode().strip()
    assert c.feed(T2 + b"refused\n" + T3 + b"next\n") == [b"next\n"]


def test_resume_before_any_line() -> None:
    c = LogCursor(keep_timestamps=False)
    assert c.resume() is None
    assert c.feed(T1 + b"a\n") == [b"a\n"]


def _c(name: str, state: str, finished: str | None = None, gpus: tuple[str, ...] | None = None,
       code: int | None = None, oom: bool = False) -> ContainerStatus:
    return ContainerStatus(id="x" * 64, name=name, image="img:1", image_id="sha256:1", state=state, exit_code=code,
                           oom_killed=oom, started_at="2026-11-29T10:00:00Z", finished_at=finished, gpus=gpus,
                           labels=(("deployer.image", "reg/img:1"), ("deployer.managed", "true")))


NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)
GPUS = (Gpu(0, "H100", "GPU-a", 81559, 20000, 100), Gpu(1, "H100", "GPU-b", 81559, 0, 0))
CONTAINERS = (
    _c("run", "running", gpus=("all",)),
    _c("fresh", "exited", "2026-11-29T11:00:00Z", code=3),
    _c("old", "exited", "2026-11-20T11:00:00Z", code=0, oom=True),
)
HS = [
    HostStatus("gpu01", True, None, CONTAINERS, GPUS, gpu_use(GPUS, CONTAINERS, Busy()), "28.5.2", "containerd",
               10 << 30),
    HostStatus("cpu01", False, "cannot reach 10.213.0.14:22: no answer within 5s"),
]


def test_select_default_all_and_name() -> None:
    names = lambda sts: [c.name for hs in sts for c in hs.containers]
    assert names(select(HS, now=NOW)) == ["run", "fresh"]
    assert names(select(HS, show_all=True, now=NOW)) == ["run", "fresh", "old"]
    assert names(select(HS, name="old", now=NOW)) == ["old"]  # a name always shows, however old


def test_to_json_one_object_per_host() -> None:
    hosts = to_json(select(HS, show_all=True, now=NOW))
    assert [h["host"] for h in hosts] == ["gpu01", "cpu01"]
    gpu01 = hosts[0]
    assert {k: gpu01[k] for k in ("reachable", "error", "docker_version", "image_store", "disk_free_bytes")} == {
        "reachable": True, "error": None, "docker_version": "28.5.2", "image_store": "containerd",
        "disk_free_bytes": 10 << 30}
    assert gpu01["containers"][0] == {"name": "run", "image": "reg/img:1", "image_id": "sha256:1", "state": "running",
                                      "exit_code": None, "oom_killed": False, "started_at": "2026-11-29T10:00:00Z",
                                      "finished_at": None, "gpus": ["0", "1"]}
    assert gpu01["containers"][2]["oom_killed"] is True and gpu01["containers"][2]["gpus"] is None
    assert gpu01["gpus"][0] == {"index": 0, "uuid": "GPU-a", "name": "H100", "memory_used_mib": 20000,
                                "memory_total_mib": 81559, "utilization_pct": 100, "held_by": ["run"],
                                "other_process": False, "free": False}
    assert hosts[1] == {"host": "cpu01", "reachable": False, "error": "cannot reach 10.213.0.14:22: no answer within 5s",
                        "docker_version": None, "image_store": None, "disk_free_bytes": None, "gpus": [],
                        "containers": []}


def test_gpu_holders_survive_a_name_filter() -> None:
    # `status fresh` lists only that container, but the GPU view still knows `run` holds both GPUs
    (gpu01, _) = to_json(select(HS, name="fresh", now=NOW))
    assert [c["name"] for c in gpu01["containers"]] == ["fresh"]
    assert [g["held_by"] for g in gpu01["gpus"]] == [["run"], ["run"]]


def test_status_rows_and_gpu_rows() -> None:
    rows = status_rows(select(HS, now=NOW), now=NOW)
    assert rows[0] == ["gpu01", "run", "reg/img:1", "running", "", "", "2026-11-29 10:00:00", "up 2h00m", "0", "0,1"]
    assert rows[1][3:5] == ["exited", "3"] and rows[1][7] == "finished 1h00m ago"
    assert rows[2][:4] == ["cpu01", "", "", "unreachable"] and "no answer" in rows[2][7]
    assert gpu_rows(HS) == [["gpu01", "0", "H100", "20000/81559", "100%", "run"],
                            ["gpu01", "1", "H100", "0/81559", "0%", "run"]]
    assert [ago(s) for s in (5, 125, 3 * 3600 + 300, 2 * 86400 + 7200)] == ["5s", "2m", "3h05m", "2d2h"]


def test_exit_text_names_signals() -> None:
    assert [exit_text(c) for c in (None, 0, 3, 137, 143, 255)] == ["", "0", "3", "137 (SIGKILL)", "143 (SIGTERM)",
                                                                   "255"]


def test_history_merge_newest_first() -> None:
    logs = {  # each host's log, oldest first
        "gpu01": [{"time": "2026-11-29T10:00:00+00:00", "action": "ship", "name": "a"},
                  {"time": "2026-11-29T12:00:00+00:00", "action": "run", "name": "a"}],
        "gpu02": [{"time": "2026-11-29T11:00:00+00:00", "action": "run", "name": "b"},
                  {"time": "2026-11-29T11:00:00+00:00", "action": "stop", "name": "b"}],
    }
    merged = merge(logs)
    assert [(r["host"], r["action"]) for r in merged] == [("gpu01", "run"), ("gpu02", "stop"), ("gpu02", "run"),
                                                          ("gpu01", "ship")]
    assert [r["action"] for r in merge(logs, name="b", limit=1)] == ["stop"]
    assert history_rows(merged[:1])[0][:3] == ["2026-11-29 12:00:00Z", "gpu01", "run"]


def test_labels() -> None:
    ready = Ready(Host("gpu01"), "sha256:abc", {"org.opencontainers.image.revision": "deadbeef"})
    spec = RunSpec("trainer:v3", gpus="all", labels=(("deployer.playbook", "train.yml"), ("deployer.name", "evil"),
                                                     ("team", "nlp")))
    labels = dict(labels_for(spec, name="train-1", ready=ready, now=NOW))
    assert labels["deployer.managed"] == "true" and labels["deployer.name"] == "train-1"  # not overridable
    assert labels["deployer.image"] == "trainer:v3" and labels["deployer.image_id"] == "sha256:abc"
    assert labels["deployer.started_at"] == "2026-11-29T12:00:00Z" and labels["deployer.gpus"] == "all"
    assert labels["deployer.git_rev"] == "deadbeef" and labels["deployer.playbook"] == "train.yml"
    assert labels["team"] == "nlp" and "@" in labels["deployer.user"]
