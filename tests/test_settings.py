import pytest

from unsloth_course.settings import env_flag


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), (" Yes ", True), ("ON", True),
                                             ("0", False), ("", False), ("false", False), ("2", False)])
def test_env_flag(monkeypatch, value, expected):
    monkeypatch.setenv("UNSLOTH_COURSE_TEST_FLAG", value)
    assert env_flag("UNSLOTH_COURSE_TEST_FLAG") is expected


def test_env_flag_unset_is_false(monkeypatch):
    monkeypatch.delenv("UNSLOTH_COURSE_TEST_FLAG", raising=False)
    assert env_flag("UNSLOTH_COURSE_TEST_FLAG") is False


@pytest.mark.parametrize("value,expected", [("", True), ("0", False), ("off", False), ("1", True)])
def test_env_flag_default_applies_only_when_unset(monkeypatch, value, expected):
    monkeypatch.setenv("UNSLOTH_COURSE_TEST_FLAG", value)
    assert env_flag("UNSLOTH_COURSE_TEST_FLAG", default=True) is expected
