"""`python -m trainyard.runtime {train,evaluate}`: the learner runtime's entry point."""

from __future__ import annotations

import argparse
import logging
import sys

from trainyard.jobs.layout import RunMode
from trainyard.runtime.runner import Runner
from trainyard.runtime.settings import RuntimeSettings, SettingsError
from trainyard.storage import open_store

EXIT_BAD_ENVIRONMENT = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainyard.runtime", description=__doc__)
    parser.add_argument("mode", choices=[mode.value for mode in RunMode])
    args = parser.parse_args(argv)
    # One ordered stream on stdout, interleaved with the command's output: the task log.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="trainyard %(levelname)s %(message)s"
    )
    try:
        settings = RuntimeSettings.from_env()
        store = open_store(settings.storage)
    except (SettingsError, RuntimeError) as error:
        logging.getLogger("trainyard.runtime").error("%s", error)
        return EXIT_BAD_ENVIRONMENT
    return Runner(RunMode(args.mode), settings, store).run().runtime_exit_code


if __name__ == "__main__":
    sys.exit(main())
