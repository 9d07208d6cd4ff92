"""The history log's append is idempotent: the remote sh script run locally, as sshd would run it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from deployer import history


def append(staging: Path, rec: dict[str, object], inline: bool = False) -> subprocess.CompletedProcess[bytes]:
    argv, line = history.append_command(str(staging), rec, inline=inline)
    return subprocess.run(list(argv), input=line, capture_output=True, check=False)


def lines(staging: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (staging / "history.jsonl").read_text().splitlines()]


def test_record_has_a_fresh_id() -> None:
    a, b = history.record("ship", image="t:1"), history.record("ship", image="t:1")
    assert len(str(a["id"])) == 32 and a["id"] != b["id"]
    assert a["action"] == "ship" and a["image"] == "t:1" and a["result"] == "ok"


def test_exact_argv_and_line() -> None:
    rec = {"id": "ab12", "action": "run", "time": "2026-01-01T00:00:00+00:00"}
    argv, line = history.append_command("/srv/stage", rec)
    assert argv[:3] == ("sh", "-c", history._APPEND)
    assert argv[3:] == ("sh", "/srv/stage", '"id":"ab12"')
    assert line == b'{"action":"run","id":"ab12","time":"2026-01-01T00:00:00+00:00"}\n'


def test_an_inline_record_is_an_argument_and_reads_no_stdin(tmp_path: Path) -> None:
    staging = tmp_path / "stage"
    rec = history.record("ship", image="t:1", image_id="sha256:1", error="it's \"quoted\" $(x) \\n")
    argv, line = history.append_command(str(staging), rec, inline=True)
    assert line == b"" and json.loads(argv[-1]) == rec
    done = subprocess.run(list(argv), input=b"not a record\n", capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert lines(staging) == [rec]
    again = append(staging, rec, inline=True)  # retried: still one line, inline or not
    assert again.returncode == 0 and append(staging, rec).returncode == 0
    assert lines(staging) == [rec]


def test_same_record_twice_leaves_one_line(tmp_path: Path) -> None:
    staging = tmp_path / "stage"  # created by the first append
    rec = history.record("ship", image="t:1", image_id="sha256:1")
    first, again = append(staging, rec), append(staging, rec)
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert lines(staging) == [rec]


def test_two_records_leave_two_lines(tmp_path: Path) -> None:
    a, b = history.record("run", name="job"), history.record("stop", name="job")
    for rec in (a, b, a, b):
        assert append(tmp_path, rec).returncode == 0
    assert lines(tmp_path) == [a, b]


def test_id_inside_another_record_does_not_block(tmp_path: Path) -> None:
    a = history.record("run", name="job")
    b = history.record("run", command=f'echo "id":"{a["id"]}" {a["id"]}')  # quoted, so escaped in JSON
    assert append(tmp_path, b).returncode == 0 and append(tmp_path, a).returncode == 0
    assert lines(tmp_path) == [b, a]


def test_record_without_id_gets_one_and_the_caller_dict_is_untouched(tmp_path: Path) -> None:
    rec: dict[str, object] = {"time": "2026-01-01T00:00:00+00:00", "action": "ship", "result": "ok"}
    assert append(tmp_path, rec).returncode == 0
    (logged,) = lines(tmp_path)
    assert "id" not in rec and len(str(logged["id"])) == 32 and {**logged, "id": None} == {**rec, "id": None}


OLD_AND_REPEATED = (
    '{"action":"ship","result":"ok","time":"2025-01-01T00:00:00+00:00"}',
    '{"action":"ship","result":"ok","time":"2025-01-01T00:00:00+00:00"}',  # old: no id, both kept
    '{"action":"run","id":"x1","time":"2025-01-02T00:00:00+00:00"}',
    '{"action":"run","id":"x1","time":"2025-01-02T00:00:00+00:00"}',
    '{"action":"sto',  # torn
    '{"action":"stop","id":"x2","time":"2025-01-03T00:00:00+00:00"}',
)


def test_old_records_without_id_stay_valid_and_repeated_ids_read_once() -> None:
    records = history.parse("\n".join(OLD_AND_REPEATED))
    assert [(r["action"], r.get("id")) for r in records] == [
        ("ship", None), ("ship", None), ("run", "x1"), ("stop", "x2")]
