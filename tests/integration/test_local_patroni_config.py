"""`patroni --validate-config` accepts every member's rendered patroni.yml, run where and as
the member runs (the postgres account, against the run's etcd), and refuses one that would
connect on 127.0.0.1: the check `local up` relies on is a real one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scaling.local import procs
from scaling.local.context import Context
from scaling.local.credentials import new_secrets
from scaling.local.etcd import start_etcd
from scaling.local.patroni import prepare_member, validate
from scaling.local.ports import PortAllocator
from scaling.local.runner import load_spec
from scaling.local.state import RunState
from scaling.local.topology import local_topology, nodes
from scaling.render.endpoints import Endpoint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    spec = load_spec(ROOT / "Pulumi.growth.yaml")
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o711)
    context = Context(
        spec=spec,
        state=RunState(stack="cfg", phase="growth", state_dir=str(state), secrets_file=""),
        secrets=new_secrets(),
        ports=PortAllocator(),
        topology=local_topology(spec),
    )
    try:
        yield context
    finally:
        for entry in context.state.processes:
            procs.stop(entry)
        for folder in context.state.extra_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def test_every_member_config_validates_and_a_loopback_connect_address_does_not(
    ctx: Context,
) -> None:
    etcd = tuple(start_etcd(ctx))
    members = nodes(ctx.topology, "postgres", "primary", "replica")
    hosts = tuple(f"127.0.1.{n.ordinal + 1}" for n in members)
    pg_port, api_port = ctx.ports.take(hosts), ctx.ports.take(hosts)
    configs = [prepare_member(ctx, node, pg_port, api_port, etcd) for node in members]
    assert [c.name for c in configs] == ["postgres-0", "postgres-1", "postgres-2"]
    for config in configs:
        document = yaml.safe_load(Path(config.config).read_text())
        assert document["etcd3"]["hosts"] == [str(e) for e in etcd]
    # The same file with 127.0.0.1 as the address others connect to is refused.
    bad = Path(configs[0].config).with_name("loopback.yml")
    document = yaml.safe_load(Path(configs[0].config).read_text())
    document["postgresql"]["connect_address"] = str(Endpoint("127.0.0.1", pg_port))
    bad.write_text(yaml.safe_dump(document))
    ctx.chown_pg(bad)
    with pytest.raises(RuntimeError, match=r"connect_address .* didn.t pass validation"):
        validate(ctx, members[0], str(bad))
