"""glip.utils.logger.setup_logger: rank-0 console + file, no duplicate handlers, silent other ranks."""
import logging

from glip.utils.logger import setup_logger


def test_rank0_writes_log_file_and_console(tmp_path, capsys):
    logger = setup_logger("glip.test_logger_a", str(tmp_path / "run"), 0)
    logger.info("hello %d", 7)
    for handler in logger.handlers:
        handler.flush()
    text = (tmp_path / "run" / "log.txt").read_text()
    assert "glip.test_logger_a INFO: hello 7" in text
    assert "hello 7" in capsys.readouterr().out


def test_repeated_setup_does_not_duplicate_lines(tmp_path):
    name = "glip.test_logger_b"
    setup_logger(name, str(tmp_path), 0)
    logger = setup_logger(name, str(tmp_path), 0, filename="second.txt")
    logger.warning("once")
    for handler in logger.handlers:
        handler.flush()
    assert (tmp_path / "second.txt").read_text().count("once") == 1
    assert "once" not in (tmp_path / "log.txt").read_text()
    assert len(logger.handlers) == 2


def test_other_ranks_get_no_handlers(tmp_path):
    logger = setup_logger("glip.test_logger_c", str(tmp_path / "r1"), 1)
    assert logger.handlers == [] and logger.level == logging.DEBUG
    assert not (tmp_path / "r1").exists()


def test_no_save_dir_means_console_only():
    logger = setup_logger("glip.test_logger_d", "", 0)
    assert [type(h) for h in logger.handlers] == [logging.StreamHandler]
