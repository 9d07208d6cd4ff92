"""for_each_host: one Outcome per host, in host order; errors stay per host, with partial values."""
from __future__ import annotations

from deployer.errors import HostError
from deployer.fleet import Unfinished, for_each_host
from deployer.inventory.host import Host


def test_values_errors_and_partial_values_per_host() -> None:
    def work(host: Host) -> int:
        if host.name == "bad":
            raise HostError(host.name, "boom")
        if host.name == "half":
            raise Unfinished(HostError(host.name, "cut"), 7)
        if host.name == "bug":
            raise KeyError("x")
        return 1

    hosts = [Host(n) for n in ("ok", "bad", "half", "bug")]
    out = for_each_host(hosts, work, parallel=2)
    assert [o.host.name for o in out] == ["ok", "bad", "half", "bug"]
    assert (out[0].ok, out[0].value) == (True, 1)
    assert not out[1].ok and out[1].value is None and "boom" in str(out[1].error)
    assert not out[2].ok and out[2].value == 7 and "cut" in str(out[2].error)
    assert not out[3].ok and "unexpected error: KeyError" in str(out[3].error)
