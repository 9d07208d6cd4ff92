"""One line (or JSON record) per host for `deploy ship -p`: what shipping and starting did there (pure)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployer.errors import DeployError, error_fields, error_text
from deployer.runs.start import Started
from deployer.ship.model import ShipResult
from deployer.sizes import human_bytes

# container states in the report
STARTED, FAILED, SKIPPED, NOT_RUN = "started", "failed", "skipped", "not run"


@dataclass(frozen=True)
class HostReport:
    """Ship and run of one host. `ship_error` set: nothing was started there."""

    host: str
    ship: ShipResult
    image: str
    playbook: str
    git_rev: str | None = None
    ship_error: DeployError | None = None
    started: Started | None = None
    run_error: DeployError | None = None
    container: str | None = None  # the name it runs (or would run) under
    state: str = NOT_RUN

    @property
    def ok(self) -> bool:
        return self.ship_error is None and self.run_error is None

    @property
    def error(self) -> DeployError | None:
        return self.ship_error or self.run_error

    def to_json(self) -> dict[str, Any]:
        """The --json record: the ship record's keys, then the run's."""
        rec = self.ship.to_json()  # its ok, error and hint are the host's, below
        rec.update({
            "ok": self.ok,
            **error_fields(self.error),
            "route": self.ship.route,
            "image": self.image,
            "playbook": self.playbook,
            "git_rev": self.git_rev,
            "shipped": self.ship_error is None,
            "ship_error": error_text(self.ship_error),
            "container": self.container,
            "container_id": self.started.container_id if self.started else None,
            "state": self.state,
            "run_error": error_text(self.run_error),
            "command": self.started.command if self.started else None,
        })
        return rec


COLUMNS = ("host", "result", "via", "layers", "sent", "image id", "container", "state")


def row(report: HostReport) -> list[str]:
    """The table row: route, bytes, verified image id, container name and state."""
    ship = report.ship
    verified = (ship.host_image_id or ship.image_id or "")[7:19] + (" verified" if ship.verified else "")
    via = ship.via or ship.route or "-"
    return [report.host, "ok" if report.ok else "FAILED", via, f"{ship.layers_sent}/{ship.layers_total}",
            human_bytes(ship.bytes_sent), verified, report.container or "-", report.state]
