import pytest

from oaml.registry import Registry


def test_register_and_get():
    reg: Registry = Registry("thing")

    @reg.register("a")
    def make_a():
        return "A"

    assert reg.get("a")() == "A"
    assert "a" in reg and reg.names() == ["a"]


def test_unknown_name_lists_known_ones():
    reg: Registry = Registry("thing")
    reg.register("alpha")(object)
    with pytest.raises(KeyError, match="unknown thing 'beta'; known: alpha"):
        reg.get("beta")


def test_duplicate_registration_is_an_error():
    reg: Registry = Registry("thing")
    reg.register("x")(object)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("x")(object)
