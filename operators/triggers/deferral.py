"""How soon a deferred task may be resumed, because of a race in Airflow 3.3's scheduler.

A task that defers ends its worker process, and the executor reports that exit as a success
of the try. When the trigger fires before the scheduler has taken in that report (seconds, on
a loaded machine: 9 s were seen in CI), the scheduler reads the stale success as the task
changed from outside and retries it (apache/airflow#67287, #72716, open for 3.3). So a trigger
of ours never fires sooner than this after the deferral: a learner pod that fails at once, or
storage that answers again, is noticed this much later, and no try is spent on the race.
"""

#: Seconds from a deferral to the earliest event of its trigger.
DEFER_SETTLE_SECONDS = 20.0
