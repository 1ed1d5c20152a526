"""The publisher runs wsgate's own durable publish script, byte for byte."""

from conftest import PACKAGE, REPO

import wsgate


def test_lua_copy_is_byte_equal_to_the_script_wsgate_embeds():
    go = (REPO / "bridge" / "publish.lua").read_bytes()
    py = (PACKAGE / "wsgate" / "publish.lua").read_bytes()
    assert py == go, "clients/python/wsgate/publish.lua differs from bridge/publish.lua: copy it over"
    assert wsgate.PUBLISH_SCRIPT.encode() == go


def test_go_embeds_the_file_rather_than_a_copy_of_its_own():
    src = (REPO / "bridge" / "redis.go").read_text()
    assert "//go:embed publish.lua" in src
    assert "rueidis.NewLuaScript(publishLua)" in src
