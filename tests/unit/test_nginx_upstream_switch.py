"""The front door of a transition: the source's nginx.conf with the target's upstream block,
everything else byte for byte (scaling/render/nginx.py, used by
scaling/transition/local_front.py)."""

from __future__ import annotations

import pytest

from scaling.render.nginx import (
    NginxLayout,
    render_nginx_conf,
    render_upstream_block,
    replace_upstream_block,
    upstream_block,
    upstream_servers,
)
from scaling.stackconfig import parse


def conf(phase: str, servers: tuple[str, ...]) -> str:
    spec = parse({"sikka:phase": phase}, stack=phase)
    layout = NginxLayout(
        listen="127.0.0.1:18080",
        status_listen="127.0.0.1:18081",
        upstream_servers=servers,
        loopback_listen="127.0.0.1:18082",
    )
    return render_nginx_conf(spec, layout)


def test_the_block_is_the_one_render_nginx_conf_writes() -> None:
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    servers = ("127.0.0.1:1001 max_fails=2", "127.0.0.1:1002 max_fails=2")
    assert upstream_block(conf("growth", servers)) == render_upstream_block(spec, servers)
    assert upstream_servers(render_upstream_block(spec, servers)) == (
        "127.0.0.1:1001",
        "127.0.0.1:1002",
    )


def test_switch_takes_the_targets_servers_balancing_and_max_conns() -> None:
    source = conf("launch", ("127.0.0.1:2001 max_fails=2",))
    target = conf("growth", ("127.0.0.1:3001 max_fails=2", "127.0.0.1:3002 max_fails=2"))
    switched = replace_upstream_block(source, upstream_block(target))
    block = upstream_block(switched)
    assert upstream_servers(block) == ("127.0.0.1:3001", "127.0.0.1:3002")
    assert "hash $sticky_key consistent;" in block  # two gateways: sticky balancing
    assert "127.0.0.1:2001" not in switched
    # Everything outside the block is the source's: its listeners, workers and limits.
    before, _, after = source.partition(upstream_block(source))
    assert switched.startswith(before) and switched.endswith(after)
    assert "listen 127.0.0.1:18080 reuseport;" in switched
    # And back: the source's own block restores the source's conf exactly.
    assert replace_upstream_block(switched, upstream_block(source)) == source


def test_a_conf_without_exactly_one_upstream_block_is_refused() -> None:
    source = conf("launch", ("127.0.0.1:2001",))
    with pytest.raises(ValueError, match="exactly one 'upstream gateways'"):
        upstream_block(source.replace("upstream gateways {", "upstream others {"))
    doubled = source + upstream_block(source)
    with pytest.raises(ValueError, match="exactly one"):
        replace_upstream_block(doubled, upstream_block(source))
    with pytest.raises(ValueError, match="exactly one"):
        replace_upstream_block(source, "server 127.0.0.1:1;\n")
