"""Entry point: `python -m codejax.main --config configs/sft.py:tiny --workdir DIR [--config.x.y=v]`.

Flags -> config -> job registry -> run. Everything else lives in importable
functions, so a notebook calls `codejax.jobs.get_job(config.job)(config, workdir)`
and takes the same path as the command line.

The console is quiet by default: Orbax, absl and JAX log at WARNING, and a run prints its
banner, a data table, one progress bar per stage and warnings. `--verbosity=1` brings the INFO
logs back (and `--verbosity=2` DEBUG). A user error (a bad field, a missing file, a locked
workdir, a config that does not fit the workdir) is one line on stderr naming the field, file
or path and the fix, exit code 2; `--verbosity=1` shows its traceback. `--dry_run` prints the
resolved config and a plan (parameters, tokens per step, steps, a memory estimate) and exits 0.

Exit codes: 0 done (also after a SIGTERM stop, which saved a checkpoint), 130 after Ctrl-C
(a checkpoint and summary.json with stop_reason "interrupted" are written first; a second
Ctrl-C exits at once), 2 a user error, 1 anything else.
"""
from __future__ import annotations

import ast
import json
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from codejax.jobs import get_job

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config: path/to/file.py[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, plots and the summary.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the resolved config and the plan, then exit.")
flags.mark_flags_as_required(["config", "workdir"])

USER_ERROR_EXIT, INTERRUPTED_EXIT = 2, 130


def _user_errors() -> tuple[type[BaseException], ...]:
    from codejax.train.checkpoint import CheckpointIOError, CheckpointWriteError
    from codejax.train.guard import WorkdirLocked
    from codejax.train.run import NonFiniteLossError
    return (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, WorkdirLocked, NonFiniteLossError,
            CheckpointIOError, CheckpointWriteError)


def verbosity() -> int:
    return int(flags.FLAGS.verbosity) if flags.FLAGS.is_parsed() else 0


def set_console(level: int) -> None:
    """Quiet by default: only codejax's own INFO lines (via the console) and warnings from anyone."""
    if level >= 1:
        logging.getLogger().setLevel(logging.DEBUG if level >= 2 else logging.INFO)
        absl_logging.set_verbosity(absl_logging.DEBUG if level >= 2 else absl_logging.INFO)
        return
    logging.getLogger().setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)
    for noisy in ("absl", "jax", "orbax", "tensorstore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_orbax)


def _not_orbax(record: logging.LogRecord) -> bool:
    """Orbax logs through absl, and a failed background save as pages of ERROR tracebacks; codejax
    reports checkpoint failures itself, in one line (codejax/train/checkpoint.py)."""
    return "/orbax/" not in record.pathname.replace("\\", "/") or record.levelno >= logging.CRITICAL


def one_line(err: BaseException | str) -> str:
    """An exception as one line; ml_collections' KeyError text arrives as a repr with \\n escapes."""
    text = str(err)
    if text[:1] in "'\"" and text[-1:] == text[:1]:
        try:
            text = str(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            pass
    return " ".join(text.split())


def _config_flag_error(err: BaseException, argv: list[str]) -> str:
    """A misspelled --config.a.b override: name the flag and the suggestion."""
    text = one_line(err)
    key = text.split(" ")[0].strip("'\"")
    given = [a.split("=")[0] for a in argv if a.startswith("--config.") and a.split("=")[0].endswith("." + key)]
    where = f" in {given[0]}" if given else ""
    return f"unknown config field {key!r}{where}: {text[len(key) + 2:].strip() or 'not in the schema'}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with config errors (a typo in a field, a bad variant) as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        text = str(e)
        if "Traceback (most recent call last)" in text:  # the config file raised: keep its own message
            flag = text.split(":", 1)[0]
            text = f"{flag}: {[line for line in text.splitlines() if line.strip()][-1].strip()}"
        _fail(f"{one_line(text)} (--helpshort lists the flags)")
    except (AttributeError, KeyError) as e:  # ml_collections: a field the schema does not have
        _fail(_config_flag_error(e, argv))
    except (ValueError, FileNotFoundError, TypeError) as e:  # the config file's get_config(arg) refused
        _fail(one_line(e))
    raise AssertionError("unreachable")


def _fail(message: str, code: int = USER_ERROR_EXIT) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    set_console(verbosity())
    config, workdir = _CONFIG.value, _WORKDIR.value
    from codejax.train.guard import INTERRUPTED, SIGNALS
    SIGNALS.exit_on_second = True
    try:
        if _DRY_RUN.value:
            from codejax.setup.plan import print_plan
            print(json.dumps(print_plan(config, workdir), indent=2, default=str))
            return
        summary = get_job(config.job)(config, workdir)
    except _user_errors() as e:
        if verbosity() >= 1:
            raise
        _fail(f"{one_line(e)}  (--verbosity=1 shows the traceback)")
    except KeyboardInterrupt:  # a second Ctrl-C outside the CLI's immediate exit
        sys.exit(INTERRUPTED_EXIT)
    print(json.dumps(summary, indent=2, default=str))
    if summary.get("stop_reason") == INTERRUPTED:
        sys.stdout.flush()
        sys.exit(INTERRUPTED_EXIT)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
