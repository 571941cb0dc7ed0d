"""glip.utils.errors: the UserError family and run_tool, the tools' edge (exit codes, one line, --debug)."""
import pytest

from glip.utils.errors import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, ConfigError, ConfigFileNotFoundError,
                               DataError, UserError, WeightFileNotFoundError, run_tool)


def _raises(err):
    def main(argv):
        raise err
    return main


def test_user_error_is_one_line_and_keeps_builtin_bases():
    err = DataError("image x.jpg does not decode;\n  give another\tfile")
    assert str(err) == "image x.jpg does not decode; give another file"
    assert isinstance(ConfigFileNotFoundError("c"), FileNotFoundError)
    assert isinstance(WeightFileNotFoundError("w"), (FileNotFoundError, UserError))
    assert str(ConfigFileNotFoundError("config file not found: a.yaml")) == "config file not found: a.yaml"


def test_user_error_becomes_one_line_and_exit_code_2(capsys, monkeypatch):
    monkeypatch.delenv("GLIP_DEBUG", raising=False)
    assert run_tool(_raises(ConfigError("unknown key MODEL.X in a.yaml")), ["--config-file", "a.yaml"]) \
        == EXIT_USER_ERROR == 2
    captured = capsys.readouterr()
    assert captured.err == "error: unknown key MODEL.X in a.yaml\n" and captured.out == ""


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_prints_the_traceback_first(capsys, monkeypatch, how):
    monkeypatch.delenv("GLIP_DEBUG", raising=False)
    argv = ["--config-file", "a.yaml"]
    if how == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("GLIP_DEBUG", "1")
    assert run_tool(_raises(DataError("bad caption")), argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "DataError: bad caption" in err
    assert err.rstrip().splitlines()[-1] == "error: bad caption"


def test_debug_flag_is_taken_out_of_argv(monkeypatch):
    monkeypatch.delenv("GLIP_DEBUG", raising=False)
    seen = []
    assert run_tool(lambda argv: seen.append(argv), ["--debug", "--config-file", "a.yaml", "K", "V"]) == EXIT_OK
    assert seen == [["--config-file", "a.yaml", "K", "V"]]


def test_exit_codes_of_main_and_interrupt(capsys):
    assert run_tool(lambda argv: 1, []) == 1
    assert run_tool(lambda argv: None, []) == 0
    assert run_tool(_raises(KeyboardInterrupt()), []) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_internal_errors_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run_tool(lambda argv: 1 / 0, [])
